"""Engine layer: import, export, build, calibrate, validate, profile; engine artifacts and backends."""

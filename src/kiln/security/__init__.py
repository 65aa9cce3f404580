"""Access control and hardening for ``kiln serve``: API keys with scopes, rate limits, signed report
links, tenant isolation, security headers and body limits.

- ``keys``: API keys (``kiln_<id>_<secret>``) stored hashed in the server's database.
- ``scopes``: which scope each route needs.
- ``hashing``: key generation, hashing and constant-time comparison.
- ``ratelimit``: per-key token buckets (429 + Retry-After).
- ``signing``: HMAC-signed, expiring URLs for buyers' report links.
- ``access``: the ASGI middleware and the gRPC interceptor that enforce all of it.
- ``headers``: Content-Security-Policy and the other standard response headers.
- ``limits``: a global request-body limit in front of every route.
"""

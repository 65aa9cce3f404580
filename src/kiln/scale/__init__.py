"""Scale-out: gateways and workers over RabbitMQ with a shared PostgreSQL store.

``broker`` (connection, queue topology), ``messages`` (job and result encoding), ``gateway``
(``kiln serve --broker``), ``worker`` (``kiln worker``), ``jobstore`` (attempt counting),
``webhooks`` (signed callbacks with retries), ``bulk`` (``kiln auth bulk``).
"""

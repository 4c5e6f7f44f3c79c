"""The server's limits and their defaults (``twotower serve --help`` says what each
protects).
"""





DEFAULTS = dict(max_request_bytes=1 << 20, max_batch=1024, max_cost=100_000,
                max_concurrency=128, max_connections=4096, workers=0, batch_parallel=2,
                timeout_keep_alive=5.0, timeout_header=10.0, timeout_body=30.0)

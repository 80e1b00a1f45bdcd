"""Operations: trace ids (context), JSON logs (logs), Prometheus metrics (metrics, queues)."""

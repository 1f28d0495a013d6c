"""Application infrastructure that is not billing: configuration from the environment, structured
logs, Prometheus metrics. Read by the composition roots (api/, jobs/)."""

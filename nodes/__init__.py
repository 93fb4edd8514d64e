"""fairpool.nodes: the node daemon, its worker processes and the in-job runtime."""

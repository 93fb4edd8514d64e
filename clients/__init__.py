"""fairpool.clients: SharedJobCluster and friends, speaking the protocol to a scheduler."""

"""State an ingress node keeps: in memory on one node, in Redis when shared."""

"""Process entry points: GPU workers, the node agent and beat."""

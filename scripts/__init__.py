"""Developer tools run from a checkout (pi-check, the soak test); never installed: setup.cfg ships edge_fer only."""

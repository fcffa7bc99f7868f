"""Physics inputs: process catalog, event generation, detector response and truth labels."""

"""Ad platform connectors (the edge where micros and cents become currency units) and their sandbox."""

"""Energy Flow Studio's Qt front-end. Imports energy_flow; energy_flow never imports this."""

"""Development helpers: a real Mosquitto for the tests (broker) and `make run` (run)."""

"""The tools on top of the pipeline: the `vitals` command line (one module per command
group), the local infrastructure (PostgreSQL, Apache Kafka or tansu), `vitals dev` and the
simulated fleet. Nothing at runtime imports this package; it imports every stage."""

"""End-to-end tests of compose/local-cluster.yml in real containers (`make test-compose`)."""

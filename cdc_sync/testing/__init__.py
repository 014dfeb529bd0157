"""Throwaway database servers for tests, the demo and the benchmark (never for production)."""

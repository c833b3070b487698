from tests.deploy import Deployment, deployment, shared_partitioned, shared_postgres, shared_sqlite

__all__ = ["Deployment", "deployment", "shared_partitioned", "shared_postgres", "shared_sqlite"]

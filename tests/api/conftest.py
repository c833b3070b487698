from tests.deploy import Deployment, deployment, shared_deployment

__all__ = ["Deployment", "deployment", "shared_deployment"]

from tests.deploy import Deployment, deployment

__all__ = ["Deployment", "deployment"]

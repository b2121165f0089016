"""FastAPI dependencies of the clickstream app: who may call a route (the store is
:data:`clickstream.web.holder.StoreDep`).

Authorisation goes through Airflow's auth manager, so it follows whatever the deployment uses
(SimpleAuthManager, FAB, Keycloak, ...):

* every route: an authenticated Airflow user (Airflow's ``get_user``: 401 without a token or with an
  expired one, 403 with an invalid one); reads need nothing more;
* writes (:func:`require_write`): permission to edit DAGs, ``is_authorized_dag(method="PUT")``; with
  SimpleAuthManager the roles ``user``, ``op`` and ``admin`` have it, ``viewer`` does not (403);
* erasure (:func:`require_admin`): an administrator. SimpleAuthManager has no permission that only its
  ``admin`` role holds (``op`` may edit configuration, connections, ...), so with it the user's role must be
  ``admin``; with any other auth manager the user needs the custom-view permission ``DELETE`` on
  :data:`ERASE_RESOURCE` (``is_authorized_custom_view``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.api_fastapi.core_api.security import GetUserDep, get_user
from fastapi import HTTPException, status

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

#: Resource name of the custom-view permission that allows erasure with non-simple auth managers.
ERASE_RESOURCE = "Clickstream user data"

__all__ = ["ERASE_RESOURCE", "get_user", "require_admin", "require_write"]


def _auth_manager() -> BaseAuthManager:
    # The mounted sub-app has its own ``app.state``; the manager is the API server's process-wide one.
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def is_admin(user: BaseUser, auth_manager: BaseAuthManager) -> bool:
    """Whether ``user`` may erase a user's data (see the module docstring)."""
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    if isinstance(auth_manager, SimpleAuthManager):
        return str(getattr(user, "role", None) or "").upper() == "ADMIN"
    return auth_manager.is_authorized_custom_view(method="DELETE", resource_name=ERASE_RESOURCE, user=user)


def require_write(user: GetUserDep) -> None:
    """Writes need permission to edit DAGs (403 otherwise)."""
    if not _auth_manager().is_authorized_dag(method="PUT", user=user):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "Forbidden: writing clickstream data needs permission to edit DAGs"
        )


def require_admin(user: GetUserDep) -> None:
    """Erasure needs an administrator (403 otherwise)."""
    if not is_admin(user, _auth_manager()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden: erasing a user's data needs an administrator")

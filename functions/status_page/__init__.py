"""HTTP: the read-only status page (HTML, or JSON with ?format=json); the work is in shared.admin.status_page."""
import os

import azure.functions as func

from shared.admin.status_page import respond
from shared.telemetry import invocation

bp = func.Blueprint()


@bp.function_name("status_page")
@bp.route(route="status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@invocation("status_page")  # a correlation id and a span, like the other functions
def status_page(req: func.HttpRequest) -> func.HttpResponse:
    """The same data as `entra-assets status --json`, behind the function key like every non-public function."""
    page = respond(os.environ, req.params, req.headers)
    return func.HttpResponse(page.body, status_code=page.status, mimetype=page.mimetype, charset="utf-8",
                             headers=page.headers)

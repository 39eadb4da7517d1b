"""Protocol adapters over the data plane: REST, KServe v2 over HTTP, KServe v2 over gRPC (grpc/)."""

from __future__ import annotations

from service.adapters import jobs, kserve_http, rest

HTTP_ROUTES = [*rest.ROUTES, *kserve_http.ROUTES, *jobs.ROUTES]
"""Every HTTP route; the app serving them needs `app.state.plane` (a DataPlane) and `app.state.jobs` (a JobStore)."""

"""Python clients of the ctxsvc HTTP API: :class:`Client` and :class:`AsyncClient`.

    from ctxsvc.client import Client, RetryPolicy

    with Client("http://127.0.0.1:8765", token=None) as ctx:
        pack = ctx.context("demo", "where are retries handled", budget_tokens=4000)
        print(pack.rendered)

    # or, in async code (asyncio or trio): the same methods, awaited
    async with AsyncClient("http://127.0.0.1:8765", retry=RetryPolicy(attempts=3)) as ctx:
        pack = await ctx.context("demo", "where are retries handled")

``Client()`` with no arguments reads the server's address and token from the
environment: ``CTXSVC_URL`` (a whole base URL), else ``http://$CTXSVC_HOST:$CTXSVC_PORT``
as ``ctxsvc serve`` binds them (127.0.0.1:8765 by default), and ``CTXSVC_TOKEN`` (read
only with the environment's URL: never sent to a URL given in code); arguments given win
over the environment.

Methods return frozen dataclasses (those of ``ctxsvc.models`` where the API
returns one) and raise the classes of ``ctxsvc.errors``, chosen by the
problem's ``code``, with the server's detail, hint, status and request id.
Failures a retry can help are retried under a :class:`RetryPolicy`; the rule
for what may be sent twice is in :class:`ctxsvc.client.core.Attempts`.

The modules: ``sync`` (:class:`Client`) and ``aio`` (:class:`AsyncClient`)
differ only in how they send and sleep; both build their calls with ``calls``
(one function per endpoint, and the dataclasses only the API answers) and
decide on retries with ``core``. The package imports only ``ctxsvc.errors``,
``ctxsvc.models``, ``ctxsvc.records``, httpx and anyio, none of the server's dependencies.
"""

from ctxsvc.client.aio import AsyncClient
from ctxsvc.client.calls import Job, Readiness
from ctxsvc.client.core import RetryPolicy
from ctxsvc.client.sync import Client
from ctxsvc.models import FileLines, FileScore, RepoInfo, SearchResult, SymbolScore, SymbolUses

__all__ = [
    "AsyncClient",
    "Client",
    "FileLines",
    "FileScore",
    "Job",
    "Readiness",
    "RepoInfo",
    "RetryPolicy",
    "SearchResult",
    "SymbolScore",
    "SymbolUses",
]

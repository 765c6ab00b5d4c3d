"""The admin gate in Gradio terms: a token textbox and a wrapper that checks it server side.

Usage in a tab: ``button.click(admin_only(handler, "launching a run"), [*inputs, token], ...)``.
The token is the last input; the wrapper checks it with :func:`srweb.access.require_admin`
before ``handler`` sees the other inputs, so a client calling the endpoint directly (API or
a hand-made queue request) is refused like the browser is.
"""

from __future__ import annotations

import functools
import html
import inspect
from typing import Any, Callable

import gradio as gr

from srweb.access import AccessDenied, admin_enabled, public_mode, require_admin


def admin_box(**kwargs: Any) -> gr.Textbox:
    """A password textbox for the admin token; shown only in public mode."""
    if admin_enabled():
        label, info = "Admin token", "Needed on this public instance for training, evaluation and run actions."
    else:
        label, info = "Admin features are off", "This public instance has no admin token configured."
    options = dict(
        label=label,
        info=info,
        type="password",
        value="",
        visible=public_mode(),
        interactive=admin_enabled(),
        elem_id="admin-token",
        max_lines=1,
    )
    options.update(kwargs)
    return gr.Textbox(**options)


def check(token: Any, action: str) -> None:
    """:func:`require_admin` with the refusal as a ``gr.Error`` (a toast; an error for API clients)."""
    try:
        require_admin(token, action)
    except AccessDenied as exc:
        message = str(exc)
        hint = " Enter it in the Admin token box at the top of the page." if admin_enabled() else ""
        raise gr.Error(html.escape(message[:1].upper() + message[1:] + "." + hint), title="Not allowed") from None


def admin_only(fn: Callable[..., Any], action: str) -> Callable[..., Any]:
    """Wrap a handler so it takes the admin token as an extra, last input and refuses without it.

    Generator handlers stay generators (Gradio streams their updates).
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def wrapper(*args: Any):
            check(args[-1] if args else None, action)
            yield from fn(*args[:-1])
    else:

        @functools.wraps(fn)
        def wrapper(*args: Any):
            check(args[-1] if args else None, action)
            return fn(*args[:-1])

    # Gradio reads the signature to pass inputs; it must see *args, not the wrapped handler's.
    wrapper.__signature__ = inspect.Signature([inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL)])
    return wrapper

"""App plugins: loaded by dotted path (``package.module:attribute``) or by a short app name."""

from __future__ import annotations

import importlib

from kiln.errors import KilnError
from kiln.serve.context import AppPlugin

# Short names for the apps kiln ships; anything else is given as "package.module:attribute".
KNOWN_APPS = {
    "authenticity": "kiln.apps.authenticity.routes:plugin",
    "packaging": "kiln.apps.packaging.routes:plugin",
    "web": "kiln.web.routes:plugin",
}
# The models each shipped app needs (its plugin's required_models(), checked by a test), so that
# choosing the apps a repository can serve imports none of them: the packaging app pulls in torch,
# which a server of ONNX models alone never needs (seconds of start-up, hundreds of MB per process).
KNOWN_APP_MODELS: dict[str, tuple[str, ...]] = {
    "authenticity": ("authenticity",),
    "packaging": ("brief_encoder", "style_scorer"),
    "web": (),
}


def load_plugin(spec: str) -> AppPlugin:
    """Imports an app plugin; says clearly when the app's module does not exist (yet)."""
    path = KNOWN_APPS.get(spec, spec)
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise KilnError(
            f"app {spec!r} is neither a known app nor a 'package.module:attribute' path",
            hint="known apps: " + ", ".join(KNOWN_APPS),
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise KilnError(
                f"app {spec!r} is not available: module {module_name} does not exist in this installation",
                hint="check the name, or install/merge the app first",
            ) from None
        raise KilnError(f"app {spec!r} could not be imported: {exc}", hint=f"pip install {exc.name}") from exc
    plugin = getattr(module, attribute, None)
    if plugin is None:
        raise KilnError(f"app {spec!r}: module {module_name} has no attribute {attribute!r}")
    for method in ("required_models", "router", "startup", "shutdown"):
        if not callable(getattr(plugin, method, None)):
            raise KilnError(f"app {spec!r}: {path} is not an AppPlugin (it has no {method}())")
    if not isinstance(getattr(plugin, "name", None), str):
        raise KilnError(f"app {spec!r}: {path} is not an AppPlugin (it has no name)")
    return plugin  # type: ignore[no-any-return]

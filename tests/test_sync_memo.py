"""TapedeckFlask remembers Flask's ensure_sync answer per function, within a bound, and changes no answer."""
from __future__ import annotations

from app import TapedeckFlask


def test_sync_functions_come_back_unchanged_and_the_memo_stays_bounded() -> None:
    app = TapedeckFlask(__name__)
    made = [lambda n=n: n for n in range(TapedeckFlask.SYNC_MEMO + 50)]
    for func in made:
        assert app.ensure_sync(func) is func
        assert app.ensure_sync(func) is func  # the memo's answer is Flask's
    assert len(app.__dict__["_sync_memo"]) == TapedeckFlask.SYNC_MEMO


def test_a_coroutine_function_is_still_wrapped() -> None:
    app = TapedeckFlask(__name__)
    app.async_to_sync = lambda func: ("wrapped", func)  # type: ignore[method-assign] - Flask's seam for async views

    async def view() -> str:
        return "x"

    assert app.ensure_sync(view) == ("wrapped", view)
    assert app.ensure_sync(view) == ("wrapped", view)


def test_bound_methods_hit_the_memo() -> None:
    class Hooks:
        def hook(self) -> None:
            return None

    app, hooks = TapedeckFlask(__name__), Hooks()
    first = app.ensure_sync(hooks.hook)
    assert app.ensure_sync(hooks.hook) is first  # a fresh bound method each access, equal and hashed alike
    assert len(app.__dict__["_sync_memo"]) == 1

"""MM-Lite (feature K): maker-only quoting around mid with an inventory skew. Post-only orders; paper only.

On each book update of an instrument it quotes (at most once per `requote_s` of market time, or when the
quote has drifted more than a tick), it picks for each side the distance from mid, among a few, that the
gate values highest, shifted against the inventory: a long position lowers both quotes, a short one raises
them, by up to `skew_bps_per_limit` at the position limit. Outside the session schedule's active hours it
cancels its quotes and waits.
"""

from __future__ import annotations

from sofia_runtime.gate import Intent, Leg
from sofia_runtime.marketdata import Book
from sofia_runtime.strategies.base import Action, Cancel, Strategy

DISTANCES_SPREADS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


class MmLite(Strategy):
    name = "mm_lite"
    live_allowed = False

    def __init__(self, config):
        self.cfg = config.mm_lite
        self.last_quote_ms: dict[tuple[str, str], int] = {}

    def instruments(self, ctx) -> set[tuple[str, str]]:
        sched = ctx.snapshot.tables["session_schedule"]
        if self.cfg.symbols:
            sched = sched.filter(sched["symbol"].is_in(self.cfg.symbols))
        pairs = {(r["venue"], r["symbol"]) for r in sched.filter(sched["active"]).iter_rows(named=True)}
        return {p for p in pairs if ctx.has_market(*p)}

    def on_book(self, book: Book, ctx) -> list[Action]:
        key = (book.venue, book.symbol)
        if not book.valid or key not in ctx.instruments:
            return []
        mine = [o for o in ctx.open_orders() if (o.venue, o.symbol) == key and o.strategy == self.name]
        if not ctx.session_active(book.venue, book.symbol):
            return [Cancel(o.client_order_id, "outside the session schedule") for o in mine]
        last = self.last_quote_ms.get(key)
        if last is not None and book.ts - last < self.cfg.requote_s * 1000:
            return []
        self.last_quote_ms[key] = book.ts
        spec = ctx.spec(*key)
        limit = ctx.max_position(*key)
        skew = -ctx.position(*key) / limit * self.cfg.skew_bps_per_limit / 1e4 * book.mid if limit else 0.0
        actions: list[Action] = []
        for side in ("buy", "sell"):
            current = [o for o in mine if o.side == side]
            best = self._best_quote(book, side, skew, spec, ctx)
            if best is None:
                actions += [Cancel(o.client_order_id, "no quote worth posting") for o in current]
                continue
            if current and abs(float(current[0].price) - best.legs[0].price) < float(spec.price_tick) / 2:
                continue  # the resting quote is still where it should be
            actions += [Cancel(o.client_order_id, "requote") for o in current]
            actions.append(best)
        return actions

    def _best_quote(self, book: Book, side: str, skew: float, spec, ctx) -> Intent | None:
        usd_per_quote = ctx.usd_per_quote(book.venue, book.symbol)
        amount = float(spec.round_amount(self.cfg.quote_usd / usd_per_quote / book.mid))
        if amount < float(spec.min_amount):
            return None
        best, best_ev, inputs = None, None, None
        for d in DISTANCES_SPREADS:
            raw = book.mid - d * book.spread + skew if side == "buy" else book.mid + d * book.spread + skew
            price = float(spec.round_price(raw, side, passive=True))
            if (side == "buy" and price >= book.ask) or (side == "sell" and price <= book.bid):
                continue
            edge_usd = (book.mid - price if side == "buy" else price - book.mid) * amount * usd_per_quote
            if inputs is None:  # the same market for every candidate of this side: look it up once
                inputs = ctx.leg_inputs(Leg(book.venue, book.symbol, side, "limit", amount, price, post_only=True))
            ev = ctx.limit_order_ev(price, amount, edge_usd, inputs)
            if best_ev is not None and ev < best_ev:
                break  # EV rises then falls with the distance: past the peak nothing better follows
            best, best_ev = (d, price, edge_usd), ev
        if best is None:
            return None
        d, price, edge_usd = best
        return Intent(self.name, (Leg(book.venue, book.symbol, side, "limit", amount, price, post_only=True),),
                      edge_usd, f"quote {side} {d} spreads from mid, skew {skew:+.6g}", tag=f"quote:{side}")

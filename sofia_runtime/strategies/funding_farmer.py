"""Funding farmer (feature F): opens the delta-neutral spot/perp pairs the snapshot's funding opportunities
offer, holds them `hold_hours` of market time, and closes them.

A pair is one intent with two market legs of the same base amount, so the gate prices both legs together and
the engine sends both or neither: a leg that fails is unwound and journaled (see the engine). The edge is the
funding expected over the holding time less what closing will cost (both legs' taker fees and half spreads).
"""

from __future__ import annotations

from dataclasses import dataclass

from sofia_runtime.gate import Intent, Leg
from sofia_runtime.marketdata import Book
from sofia_runtime.strategies.base import Action, Strategy


@dataclass
class Pair:
    venue: str
    perp: str
    spot: str
    perp_side: str  # side of the opening perp leg
    opened_ms: int
    amount: float
    hold_hours: float
    closing: bool = False


class FundingFarmer(Strategy):
    name = "funding_farmer"

    def __init__(self, config):
        self.cfg = config.funding_farmer
        self.pairs: dict[tuple[str, str], Pair] = {}
        self.tried_ms: dict[tuple[str, str], int] = {}

    def hold_hours(self, offer: dict) -> float:
        return self.cfg.hold_hours or self.cfg.breakeven_multiple * (offer["breakeven_hours"] or 0.0)

    def _offers(self, ctx):
        rows = ctx.snapshot.tables["funding_opportunities"].filter("offered").sort("net_annual_carry", descending=True)
        return [r for r in rows.iter_rows(named=True) if ctx.has_market(r["venue"], r["symbol"])
                and ctx.has_market(r["venue"], r["spot_symbol"])]

    def instruments(self, ctx) -> set[tuple[str, str]]:
        out = set()
        for r in self._offers(ctx):
            out |= {(r["venue"], r["symbol"]), (r["venue"], r["spot_symbol"])}
        return out

    def restore(self, records: list[dict], ctx) -> None:
        for rec in records:
            p = rec["payload"]
            if rec["kind"] != "decision" or p.get("strategy") != self.name or not p.get("passed"):
                continue
            action, venue, perp = p["tag"].split(":", 2)
            legs = p["legs"]
            if action == "open":
                self.pairs[(venue, perp)] = Pair(venue, perp, legs[1]["symbol"], legs[0]["side"], p["market_ts"],
                                                 float(legs[0]["amount"]), float(p["hold_hours"]))
            elif action == "close":
                self.pairs.pop((venue, perp), None)

    def on_book(self, book: Book, ctx) -> list[Action]:
        actions: list[Action] = []
        for key, pair in list(self.pairs.items()):
            if not pair.closing and book.ts - pair.opened_ms >= pair.hold_hours * 3_600_000:
                intent = self._close(pair, ctx)
                if intent:
                    pair.closing = True
                    actions.append(intent)
        if len(self.pairs) >= self.cfg.max_pairs:
            return actions
        for r in self._offers(ctx):
            key = (r["venue"], r["symbol"])
            if key in self.pairs or len(self.pairs) >= self.cfg.max_pairs:
                continue
            if book.ts - self.tried_ms.get(key, -10**15) < self.cfg.reconsider_s * 1000:
                continue
            intent = self._open(r, ctx)
            if intent:
                self.tried_ms[key] = book.ts
                self.pairs[key] = Pair(r["venue"], r["symbol"], r["spot_symbol"], intent.legs[0].side, book.ts,
                                       intent.legs[0].amount, self.hold_hours(r))
                actions.append(intent)
        return actions

    def on_decision(self, intent: Intent, passed: bool, ctx) -> None:
        """An open the gate or the limits refused is forgotten, to be tried again on a later book."""
        action, venue, perp = intent.tag.split(":", 2)
        if not passed:
            if action == "open":
                self.pairs.pop((venue, perp), None)
            elif (venue, perp) in self.pairs:
                self.pairs[(venue, perp)].closing = False

    def on_pair_failed(self, intent: Intent, ctx) -> None:
        """A leg failed and the engine unwound the other: the pair is not held."""
        action, venue, perp = intent.tag.split(":", 2)
        if action == "open":
            self.pairs.pop((venue, perp), None)

    def _open(self, r: dict, ctx) -> Intent | None:
        venue, perp, spot = r["venue"], r["symbol"], r["spot_symbol"]
        pbook, sbook = ctx.book(venue, perp), ctx.book(venue, spot)
        if not (pbook.valid and sbook.valid):
            return None
        pspec, sspec = ctx.spec(venue, perp), ctx.spec(venue, spot)
        step = max(pspec.amount_step, sspec.amount_step)
        amount = float((ctx.dec(self.cfg.notional_usd / ctx.usd_per_quote(venue, perp) / pbook.mid) / step)
                       .to_integral_value("ROUND_FLOOR") * step)
        if amount < float(max(pspec.min_amount, sspec.min_amount)):
            return None
        short_perp = r["direction"] == "long_spot_short_perp"
        perp_side, spot_side = ("sell", "buy") if short_perp else ("buy", "sell")
        notional = amount * pbook.mid * ctx.usd_per_quote(venue, perp)
        hold = self.hold_hours(r)
        periods = hold / r["observed_interval_hours"]
        funding = abs(r["mean_funding_rate"]) * periods * notional
        closing = notional * (ctx.fee_rate(venue, perp, "taker") + ctx.fee_rate(venue, spot, "taker")) \
            + amount * (pbook.spread + sbook.spread) / 2 * ctx.usd_per_quote(venue, perp)
        return Intent(self.name, (Leg(venue, perp, perp_side, "market", amount, None),
                                  Leg(venue, spot, spot_side, "market", amount, None)),
                      funding - closing, f"{r['direction']}: {r['mean_funding_rate']:+.6f} per "
                      f"{r['observed_interval_hours']:g} h for {hold:g} h, closing costs included",
                      tag=f"open:{venue}:{perp}", hold_hours=hold)

    def _close(self, pair: Pair, ctx) -> Intent | None:
        held_perp = ctx.position(pair.venue, pair.perp)
        if not (ctx.book(pair.venue, pair.perp).valid and ctx.book(pair.venue, pair.spot).valid):
            return None
        amount = abs(held_perp)
        if amount <= 0:
            self.pairs.pop((pair.venue, pair.perp), None)
            return None
        back = {"buy": "sell", "sell": "buy"}
        return Intent(self.name, (Leg(pair.venue, pair.perp, back[pair.perp_side], "market", amount, None),
                                  Leg(pair.venue, pair.spot, pair.perp_side, "market", amount, None)),
                      0.0, f"close after {pair.hold_hours:g} h held", reduce_only=True,
                      tag=f"close:{pair.venue}:{pair.perp}")

    def on_fill(self, fill: dict, ctx) -> list[Action]:
        return []

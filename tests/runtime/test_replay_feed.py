"""The replay feed against a row-by-row reading of the same tables, and the snapshot that leaves the replay's books
and trades in their files."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone

import polars as pl
import pytest

from runtime_support import PERP, SPOT, publish, snapshot_tables
from sofia_runtime.marketdata import BOOK, FUNDING, TRADE, Book, Books, FundingTick, ReplayFeed, TradeTick
from sofia_runtime.snapshot import SnapshotError, load_current


def _ms(ts: datetime) -> int:
    return int(ts.replace(tzinfo=timezone.utc).timestamp() * 1000)


def reference_stream(books: pl.DataFrame, trades: pl.DataFrame, funding: pl.DataFrame, keep) -> list[tuple]:
    """(ts_ms, kind, fields) of every kept row, by time, then kind, then position in its table."""
    events = []
    for kind, df in ((BOOK, books), (TRADE, trades), (FUNDING, funding)):
        rows = [r for r in df.iter_rows(named=True) if keep is None or (r["venue"], r["symbol"]) in keep]
        for pos, r in enumerate(rows):
            if kind == BOOK:
                fields = (r["venue"], r["symbol"], _ms(r["ts"]), r["bid"], r["ask"], r["bid_size"], r["ask_size"])
            elif kind == TRADE:
                fields = TradeTick(r["venue"], r["symbol"], _ms(r["ts"]), r["side"], r["price"], r["amount"])
            else:
                fields = FundingTick(r["venue"], r["symbol"], _ms(r["ts"]), r["funding_rate"])
            events.append((_ms(r["ts"]), kind, pos, fields))
    events.sort(key=lambda e: e[:3])
    return [(ts, kind, fields) for ts, kind, _, fields in events]


def feed_stream(feed: ReplayFeed) -> list[tuple]:
    books, out = Books(), []
    for ts, kind, i in feed.events():
        assert type(ts) is int and type(kind) is int and type(i) is int
        ev = feed.event(kind, i, books)
        if kind == BOOK:
            assert isinstance(ev, Book) and ev is books.get(ev.venue, ev.symbol)
            ev = (ev.venue, ev.symbol, ev.ts, ev.bid, ev.ask, ev.bid_size, ev.ask_size)
        out.append((ts, kind, ev))
    return out


@pytest.fixture(scope="module")
def tables() -> dict[str, pl.DataFrame]:
    t = snapshot_tables()
    # rows out of time order and two books of one market at the same millisecond: order by time, else by table row
    books = t["replay_books"]
    t["replay_books"] = pl.concat([books.reverse(), books.head(3).with_columns(pl.col("bid") - 1.0)])
    return t


@pytest.mark.parametrize("keep", [None, {("binance", SPOT), ("okx", PERP)}, {("okx", SPOT), ("kraken", SPOT)}, set()])
def test_the_feed_replays_every_kept_row_in_time_order(tables, keep):
    books, trades, funding = tables["replay_books"], tables["replay_trades"], tables["replay_funding"]
    expected = reference_stream(books, trades, funding, keep)
    if keep is None:
        assert {kind for _, kind, _ in expected} == {BOOK, TRADE, FUNDING}
    for frames in ((books, trades, funding), (books.lazy(), trades.lazy(), funding.lazy())):
        feed = ReplayFeed(*frames[:2], keep=keep, funding=frames[2])
        assert feed_stream(feed) == expected
        assert len(feed) == len(expected)
        if expected:
            assert (feed.start_ms, feed.end_ms) == (expected[0][0], expected[-1][0])
            middle = expected[len(expected) // 2][0]
            assert feed.position_after(middle) == sum(1 for ts, _, _ in expected if ts <= middle)
            assert list(feed.events(feed.position_after(middle)))[0][0] > middle
        assert feed.position_after(0) == 0 and feed.position_after(2**62) == len(expected)


def test_the_feed_without_funding_and_its_book_state(tables):
    feed = ReplayFeed(tables["replay_books"], tables["replay_trades"], keep={("binance", SPOT)})
    assert feed.funding_rows == [] and all(kind != FUNDING for _, kind, _ in feed.events())
    books = Books()
    for _, kind, i in feed.events():
        feed.event(kind, i, books)
    (book,) = books.by_key.values()
    last = tables["replay_books"].filter((pl.col("venue") == "binance") & (pl.col("symbol") == SPOT)).sort(
        "ts", maintain_order=True).row(-1, named=True)
    assert (book.bid, book.ask, book.ts) == (last["bid"], last["ask"], _ms(last["ts"]))
    assert book.updates == feed.book_ts.size and book.vol() > 0 and not math.isnan(book.mid)


def test_the_snapshot_leaves_the_replay_in_its_files(tmp_path, tables):
    publish(tmp_path, tables)
    snap = load_current(tmp_path / "serving")
    assert set(snap.tables) == set(tables) and len(snap.tables) == len(tables)
    assert "replay_books" not in snap.tables.frames and "replay_trades" not in snap.tables.frames
    for name in ("replay_books", "replay_trades", "replay_funding", "markets"):
        assert snap.tables[name].equals(tables[name])
        assert snap.scan(name).collect().equals(tables[name])
    keep = {("binance", SPOT), ("okx", PERP)}
    from_files = ReplayFeed(snap.scan("replay_books"), snap.scan("replay_trades"), keep=keep,
                            funding=snap.scan("replay_funding"))
    in_memory = ReplayFeed(tables["replay_books"], tables["replay_trades"], keep=keep, funding=tables["replay_funding"])
    assert feed_stream(from_files) == feed_stream(in_memory)


def test_a_replay_file_that_does_not_match_its_manifest_is_refused(tmp_path, tables):
    sid = publish(tmp_path, tables)
    manifest_path = tmp_path / "serving" / sid / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["tables"]["replay_books"]["rows"] += 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match="replay_books has .* rows, manifest says"):
        load_current(tmp_path / "serving")
    manifest["tables"]["replay_books"]["rows"] -= 1
    manifest_path.write_text(json.dumps(manifest))
    trades = tmp_path / "serving" / sid / "replay_trades.parquet"
    tables["replay_trades"].drop("trade_id").write_parquet(trades)
    manifest["tables"]["replay_trades"]["sha256"] = hashlib.sha256(trades.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match="replay_trades schema"):
        load_current(tmp_path / "serving")


# --- the health server ------------------------------------------------------------------------------------------

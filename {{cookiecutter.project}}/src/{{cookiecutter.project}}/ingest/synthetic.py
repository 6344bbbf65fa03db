"""Synthetic shopping sessions in the Coveo `browsing_train.csv` schema, with a known ground truth.

The generative process (its probabilities are kept in a `GeneratorModel`):

* a catalogue of SKUs with Zipf-like popularity; each SKU belongs to one shopping intent (a
  category) and sometimes to a second one; p(item | intent) is popularity restricted to its SKUs;
* each SKU has a few successors drawn from its own intent (what shoppers look at next);
* a session draws an intent z, its first product from p(item | z), and each next product from
  T(next | z, prev) ∝ w_successor·succ(next | prev) + w_intent·p(next | z) + w_jump·pop(next),
  restricted to next ≠ prev (never the same product twice in a row);
* each product step becomes a detail event plus its pageview twin (same SKU, URL and timestamp),
  sometimes an add (and a remove of it), and at the end of some sessions a purchase; non-product
  pageviews fall between the steps.

Adds, removes and purchases are of the step's own product and come right after its detail, so
collapsing consecutive repeats of product events recovers the latent chain exactly, and
`next_item_probabilities` is the Bayes-optimal next-item distribution of the observed sequence.
Pageviews have a null `product_action` (Coveo leaves the field empty); non-product pageviews also
have a null `product_sku_hash`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from functools import cached_property
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ProjectError
from ..schema import EVENTS_GLOB
from ..settings import Settings

MODEL_FILE = "generator_model.npz"

SESSION_GAP_MS = 30 * 60 * 1000  # Coveo cuts sessions after 30 idle minutes
_DAY_MS = 24 * 60 * 60 * 1000
_MODEL_STREAM, _BATCH_STREAM = 0, 1  # independent random streams derived from the seed

# Event kinds while rendering, in their order within a step.
_DETAIL, _TWIN, _ADD, _REMOVE, _PURCHASE, _PAGEVIEW = range(6)
_EVENT_TYPES = pa.array(["pageview", "event_product"])
_ACTIONS = pa.array(["detail", "add", "remove", "purchase"])
_ACTION_OF_KIND = np.array([0, 0, 1, 2, 3, 0], dtype=np.int32)  # index into _ACTIONS per kind
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


class GeneratorError(ProjectError, ValueError):
    """A generator configuration or model file that cannot be used."""


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. Rates are per product step unless said otherwise."""

    n_sessions: int = 20_000
    n_products: int = 2_000
    n_intents: int = 30
    seed: int = 42
    start_date: date = date(2026, 1, 1)
    days: int = 28
    batch_sessions: int = 100_000  # sessions per Parquet file (bounds memory)
    # latent chain
    mean_steps: float = 5.0  # product steps per session: geometric with this mean, capped
    max_steps: int = 50
    zipf_exponent: float = 1.0  # popularity of the k-th most popular SKU ∝ k^-zipf_exponent
    n_successors: int = 5
    second_intent_share: float = 0.3  # SKUs that also belong to a second intent
    w_successor: float = 0.2  # low enough that the intent (the whole session) matters
    w_intent: float = 0.7
    w_jump: float = 0.1
    # rendering noise
    add_rate: float = 0.3
    remove_rate: float = 0.2  # share of adds removed again
    purchase_rate: float = 0.5  # share of sessions whose last product is in the cart
    pageviews_per_step: float = 1.8  # non-product pageviews after a step (Poisson mean)
    mean_gap_s: float = 45.0  # mean idle time before a detail or pageview
    mean_cart_s: float = 4.0  # mean delay of an add/remove/purchase after the previous event
    n_pages: int = 5_000  # non-product URLs

    def __post_init__(self) -> None:
        problems = []
        if self.n_sessions < 1 or self.batch_sessions < 1:
            problems.append("n_sessions and batch_sessions must be at least 1")
        if self.n_products < 2:
            problems.append("n_products must be at least 2")
        if not 1 <= self.n_intents <= self.n_products:
            problems.append("n_intents must be between 1 and n_products")
        if self.days < 1 or self.max_steps < 1 or self.mean_steps < 1 or self.n_pages < 1:
            problems.append("days, max_steps, mean_steps and n_pages must be at least 1")
        if min(self.w_successor, self.w_intent) < 0 or self.w_jump <= 0:
            problems.append("w_successor and w_intent must be >= 0 and w_jump > 0")
        rates = (self.second_intent_share, self.add_rate, self.remove_rate, self.purchase_rate)
        if not all(0 <= r <= 1 for r in rates):
            problems.append("second_intent_share and add/remove/purchase rates must be in [0, 1]")
        if min(self.pageviews_per_step, self.mean_gap_s, self.mean_cart_s) < 0:
            problems.append("pageviews_per_step, mean_gap_s and mean_cart_s must be >= 0")
        if problems:
            raise GeneratorError("Invalid generator configuration: " + "; ".join(problems))

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> GeneratorConfig:
        """The configuration the project's settings ask for (plus explicit overrides)."""
        values = {
            "n_sessions": settings.n_sessions,
            "n_products": settings.n_products,
            "seed": settings.seed,
            "start_date": settings.start_date,
            "days": settings.days,
        }
        return cls(**{**values, **overrides})


@dataclass(frozen=True, eq=False)
class GeneratorModel:
    """The generator's catalogue and probabilities: enough to compute the exact posterior.

    Product ids are row indices into `sku_hashes`, in popularity order (0 = most popular).
    """

    sku_hashes: np.ndarray  # (P,) str
    url_hashes: np.ndarray  # (P + pages,) str: product page of each SKU, then non-product pages
    popularity: np.ndarray  # (P,) jump distribution
    intent_prior: np.ndarray  # (K,)
    intent_items: np.ndarray  # (K, P) p(item | intent)
    successor_items: np.ndarray  # (P, S) int32, never the row's own product
    successor_probs: np.ndarray  # (P, S) rows sum to 1 (repeated successors add up)
    mixture: np.ndarray  # (3,) weights of successor, intent, jump; sums to 1

    @property
    def n_products(self) -> int:
        return len(self.sku_hashes)

    def save(self, path: Path) -> Path:
        """Write the model as one .npz file (exactly at `path`)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            np.savez_compressed(f, **{fd.name: getattr(self, fd.name) for fd in fields(self)})
        return path

    @classmethod
    def load(cls, path: Path) -> GeneratorModel:
        """Read a model written by `save`."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                return cls(**{fd.name: npz[fd.name] for fd in fields(cls)})
        except (OSError, ValueError, KeyError) as e:
            why = f"it lacks {e}" if isinstance(e, KeyError) else "it is not an .npz model file"
            raise GeneratorError(
                f"{path} is not a generator model file: {why}. Regenerate it with write_events()."
            ) from e

    @cached_property
    def _index(self) -> dict[str, int]:
        return {sku: i for i, sku in enumerate(self.sku_hashes.tolist())}

    def product_ids(self, skus: list[str]) -> np.ndarray:
        """Catalogue indices of SKU hashes; raises GeneratorError naming unknown ones."""
        index = self._index
        unknown = [s for s in skus if s not in index]
        if unknown:
            raise GeneratorError(
                f"{len(unknown)} SKU(s) are not in the generator's catalogue, e.g. {unknown[0]!r}: "
                "use the model file saved next to the events these SKUs came from."
            )
        return np.array([index[s] for s in skus], dtype=np.int64)


@dataclass(frozen=True)
class LatentSessions:
    """Latent chains of one batch: session s has products items[offsets[s]:offsets[s + 1]]."""

    intents: np.ndarray  # (n,) int
    lengths: np.ndarray  # (n,) int, >= 1
    items: np.ndarray  # (sum of lengths,) int32 product ids

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)])


@dataclass(frozen=True)
class WriteResult:
    """What write_events wrote: event files in order, their total rows, and the model file."""

    paths: list[Path]
    rows: int
    sessions: int
    model_path: Path


def _random_hex(rng: np.random.Generator, n: int) -> pa.StringArray:
    """n random 64-character hex strings, built as Arrow buffers (no Python strings)."""
    raw = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    chars = np.empty((n, 64), dtype=np.uint8)
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 15]
    offsets = np.arange(0, 64 * (n + 1), 64, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))


def _zipf(n: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


class _RowSampler:
    """Draws one column per requested row of a row-stochastic matrix with a single searchsorted.

    Row r's cumulative sums are shifted by r, so all rows form one increasing array.
    """

    def __init__(self, probs: np.ndarray) -> None:
        cdf = np.cumsum(probs, axis=1)
        cdf[:, -1] = 1.0  # no draw may fall past a row's end through rounding
        self.width = probs.shape[1]
        self.flat = (cdf + np.arange(len(probs))[:, None]).ravel()

    def __call__(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pos = np.searchsorted(self.flat, rows + rng.random(len(rows)), side="right")
        return np.minimum(pos - rows * self.width, self.width - 1)

    def repeat(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws from the first row."""
        return self(np.zeros(n, dtype=np.int64), rng)


def build_model(config: GeneratorConfig) -> GeneratorModel:
    """Draw the catalogue and the process probabilities from the config's seed."""
    rng = np.random.default_rng([config.seed, _MODEL_STREAM])
    n, k = config.n_products, config.n_intents
    popularity = _zipf(n, config.zipf_exponent)

    # Every intent gets at least one SKU: primary intents deal a shuffled catalogue round-robin.
    primary = rng.permutation(np.arange(n) % k)
    member = np.zeros((k, n), dtype=bool)
    member[primary, np.arange(n)] = True
    second = np.flatnonzero(rng.random(n) < config.second_intent_share)
    member[rng.integers(0, k, size=len(second)), second] = True
    intent_items = popularity * member
    intent_items /= intent_items.sum(axis=1, keepdims=True)

    # Successors come from the product's primary intent; redraw the product itself, and use the
    # whole catalogue where the intent has no other product.
    lonely = intent_items[primary, np.arange(n)] > 1 - 1e-12
    source = np.vstack([intent_items, popularity])
    source_row = np.where(lonely, k, primary)
    sampler = _RowSampler(source)
    rows = np.repeat(source_row, config.n_successors)
    owner = np.repeat(np.arange(n), config.n_successors)
    successors = sampler(rows, rng)
    while (again := np.flatnonzero(successors == owner)).size:
        successors[again] = sampler(rows[again], rng)

    mixture = np.array([config.w_successor, config.w_intent, config.w_jump])
    return GeneratorModel(
        sku_hashes=np.asarray(_random_hex(rng, n).to_numpy(zero_copy_only=False), dtype="U64"),
        url_hashes=np.asarray(
            _random_hex(rng, n + config.n_pages).to_numpy(zero_copy_only=False), dtype="U64"
        ),
        popularity=popularity,
        intent_prior=rng.dirichlet(np.full(k, 5.0)),
        intent_items=intent_items,
        successor_items=successors.reshape(n, config.n_successors).astype(np.int32),
        successor_probs=rng.dirichlet(np.ones(config.n_successors), size=n),
        mixture=mixture / mixture.sum(),
    )


class _ChainSampler:
    """Draws first products and transitions of the latent chain (see the module docstring)."""

    def __init__(self, model: GeneratorModel) -> None:
        self.model = model
        self.component_cdf = np.cumsum(model.mixture)
        self.by_intent = _RowSampler(model.intent_items)
        self.by_successor = _RowSampler(model.successor_probs)
        self.by_popularity = _RowSampler(model.popularity[None, :])

    def first(self, intents: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.by_intent(intents, rng)

    def next(self, intents: np.ndarray, prev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One draw of T(next | z, prev) per row: the mixture, redrawn where it repeats prev."""
        draw = np.empty(len(prev), dtype=np.int64)
        todo = np.arange(len(prev))
        while todo.size:
            part = np.searchsorted(self.component_cdf, rng.random(todo.size), side="right")
            succ, intent, jump = (todo[part == c] for c in range(3))
            column = self.by_successor(prev[succ], rng)
            draw[succ] = self.model.successor_items[prev[succ], column]
            draw[intent] = self.by_intent(intents[intent], rng)
            draw[jump] = self.by_popularity.repeat(len(jump), rng)
            todo = todo[draw[todo] == prev[todo]]
        return draw


def sample_sessions(
    config: GeneratorConfig, model: GeneratorModel, n_sessions: int, rng: np.random.Generator
) -> LatentSessions:
    """Draw latent intents and product chains for n_sessions sessions."""
    lengths = np.minimum(rng.geometric(1 / config.mean_steps, n_sessions), config.max_steps)
    intents = _RowSampler(model.intent_prior[None, :]).repeat(n_sessions, rng)
    chain = _ChainSampler(model)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    items = np.empty(lengths.sum(), dtype=np.int32)
    items[starts] = chain.first(intents, rng)
    for step in range(1, lengths.max()):
        active = np.flatnonzero(lengths > step)
        pos = starts[active] + step
        items[pos] = chain.next(intents[active], items[pos - 1], rng)
    return LatentSessions(intents=intents, lengths=lengths, items=items)


def _gaps_ms(rng: np.random.Generator, n: int, mean_s: float) -> np.ndarray:
    """Exponential waiting times, at least 1 s (no ties) and always under the 30-minute cut."""
    gaps = np.rint(rng.exponential(mean_s * 1000, n)).astype(np.int64)
    return np.clip(gaps, 1000, SESSION_GAP_MS - 1000)


def render_events(
    config: GeneratorConfig,
    model: GeneratorModel,
    sessions: LatentSessions,
    rng: np.random.Generator,
) -> pa.Table:
    """Turn latent chains into shuffled event rows (dictionary-encoded string columns)."""
    n, n_steps = len(sessions.lengths), len(sessions.items)
    offsets = sessions.offsets
    step_session = np.repeat(np.arange(n), sessions.lengths)
    first_step = np.zeros(n_steps, dtype=bool)
    first_step[offsets[:-1]] = True

    add = rng.random(n_steps) < config.add_rate
    remove = add & (rng.random(n_steps) < config.remove_rate)
    purchase = np.zeros(n_steps, dtype=bool)
    last = offsets[1:] - 1
    purchase[last] = add[last] & ~remove[last] & (rng.random(n) < config.purchase_rate)
    pages = rng.poisson(config.pageviews_per_step, n_steps)

    # Rows of a step, in time order: detail, twin, [add], [remove], [purchase], pageviews...
    count = 2 + add + remove + purchase + pages
    row_step = np.repeat(np.arange(n_steps), count)
    within = np.arange(len(row_step)) - np.repeat(np.cumsum(count) - count, count)
    cart_end = 2 + add.astype(np.int64)
    kind = np.full(len(row_step), _PAGEVIEW, dtype=np.int8)
    kind[within < (cart_end + remove + purchase)[row_step]] = _PURCHASE
    kind[within < (cart_end + remove)[row_step]] = _REMOVE
    kind[within < cart_end[row_step]] = _ADD
    kind[within == 1] = _TWIN
    kind[within == 0] = _DETAIL

    step_gap = (kind == _DETAIL) & ~first_step[row_step]
    increment = np.zeros(len(row_step), dtype=np.int64)
    increment[step_gap] = _gaps_ms(rng, int(step_gap.sum()), config.mean_gap_s)
    cart = (kind >= _ADD) & (kind <= _PURCHASE)
    increment[cart] = _gaps_ms(rng, int(cart.sum()), config.mean_cart_s)
    page = kind == _PAGEVIEW
    increment[page] = _gaps_ms(rng, int(page.sum()), config.mean_gap_s)
    row_session = step_session[row_step]
    elapsed = np.cumsum(increment)
    session_first_row = np.searchsorted(row_step, offsets[:-1])
    elapsed -= elapsed[session_first_row][row_session]  # first rows have increment 0
    start_ms = int(datetime.combine(config.start_date, datetime.min.time(), UTC).timestamp() * 1000)
    session_start = start_ms + (rng.random(n) * config.days * _DAY_MS).astype(np.int64)
    timestamps = session_start[row_session] + elapsed

    product = sessions.items[row_step]
    n_pages = len(model.url_hashes) - model.n_products  # the model's, should config differ
    page_ids = _RowSampler(_zipf(n_pages, 1.0)[None, :]).repeat(int(page.sum()), rng)
    url = product.astype(np.int32)
    url[page] = model.n_products + page_ids

    order = rng.permutation(len(row_step))  # the log is not in time order
    kind, page = kind[order], page[order]
    is_pageview = page | (kind == _TWIN)

    def dictionary(
        indices: np.ndarray, values: pa.Array, mask: np.ndarray | None = None
    ) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32(), mask=mask), values)

    return pa.table(
        {
            "session_id_hash": dictionary(row_session[order], _random_hex(rng, n)),
            "event_type": dictionary((~is_pageview).astype(np.int32), _EVENT_TYPES),
            "product_action": dictionary(_ACTION_OF_KIND[kind], _ACTIONS, is_pageview),
            "product_sku_hash": dictionary(product[order], pa.array(model.sku_hashes), page),
            "server_timestamp_epoch_ms": pa.array(timestamps[order], pa.int64()),
            "hashed_url": dictionary(url[order], pa.array(model.url_hashes)),
        }
    )


def generate_batches(config: GeneratorConfig, model: GeneratorModel) -> Iterator[pa.Table]:
    """Event tables of up to `batch_sessions` sessions each; the same config gives the same rows."""
    for batch, first in enumerate(range(0, config.n_sessions, config.batch_sessions)):
        rng = np.random.default_rng([config.seed, _BATCH_STREAM, batch])
        size = min(config.batch_sessions, config.n_sessions - first)
        yield render_events(config, model, sample_sessions(config, model, size, rng), rng)


def write_events(
    config: GeneratorConfig,
    out_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> WriteResult:
    """Generate into out_dir: events-00000.parquet, ... and generator_model.npz.

    The folder holds one generated data set: earlier event files there are removed first. Each file
    appears under its final name only once complete. `progress(sessions_done, n_sessions)` is
    called after each file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(EVENTS_GLOB):
        old.unlink()
    model = build_model(config)
    model_path = model.save(out_dir / MODEL_FILE)
    paths, rows = [], 0
    for batch, table in enumerate(generate_batches(config, model)):
        path = out_dir / f"events-{batch:05d}.parquet"
        partial = path.with_name(path.name + ".partial")
        # Statistics of the random hash columns cost time and help no reader; timestamps' do.
        pq.write_table(table, partial, write_statistics=["server_timestamp_epoch_ms"])
        partial.replace(path)
        paths.append(path)
        rows += table.num_rows
        if progress is not None:
            progress(min((batch + 1) * config.batch_sessions, config.n_sessions), config.n_sessions)
    return WriteResult(paths=paths, rows=rows, sessions=config.n_sessions, model_path=model_path)


def next_item_probabilities(model: GeneratorModel, prefix_skus: list[str]) -> np.ndarray:
    """Exact P(next product | observed products so far), over the catalogue (model order).

    P(next | prefix) = sum_z P(z | prefix) T(next | z, last); see `next_item_probabilities_batch`.
    """
    return next_item_probabilities_batch(model, [prefix_skus])[0]


def next_item_probabilities_batch(
    model: GeneratorModel, sessions: Sequence[Sequence[str]]
) -> np.ndarray:
    """(len(sessions), n_products) exact P(next | prefix) per session, in one vectorised pass.

    Consecutive repeats are collapsed (as in the observed sequences), P(z | prefix) comes from
    the prior and the known transition likelihoods, and the last product gets probability 0 (the
    chain never repeats it). An empty prefix gets the distribution of first products.
    """
    n = len(sessions)
    lengths = np.fromiter(map(len, sessions), dtype=np.int64, count=n)
    ids = model.product_ids(list(chain.from_iterable(sessions)))
    owner = np.repeat(np.arange(n), lengths)
    keep = np.ones(ids.size, dtype=bool)
    keep[1:] = (ids[1:] != ids[:-1]) | (owner[1:] != owner[:-1])
    ids, owner = ids[keep], owner[keep]

    w_succ, w_intent, w_jump = model.mixture
    nonempty = lengths > 0
    ends = np.cumsum(np.bincount(owner, minlength=n))
    first = ids[(ends - np.bincount(owner, minlength=n))[nonempty]]
    last = ids[ends[nonempty] - 1]

    def stay_mass(prev: np.ndarray) -> np.ndarray:
        """(len(prev), K) mixture mass on prev itself, which T(. | z, prev) renormalises away."""
        return w_intent * model.intent_items[:, prev].T + w_jump * model.popularity[prev, None]

    # log P(z) + log p(first | z) + sum over transitions of log T(next | z, prev), per session.
    with np.errstate(divide="ignore"):  # SKUs outside an intent rule that intent out
        log_post = np.log(model.intent_prior) + np.log(model.intent_items[:, first].T)
    step = np.flatnonzero(owner[1:] == owner[:-1])
    prev, nxt = ids[step], ids[step + 1]
    successor = (model.successor_probs[prev] * (model.successor_items[prev] == nxt[:, None])).sum(1)
    mixed = (
        w_succ * successor[:, None]
        + w_intent * model.intent_items[:, nxt].T
        + w_jump * model.popularity[nxt, None]
    )
    row_of_session = np.cumsum(nonempty) - 1
    np.add.at(log_post, row_of_session[owner[step]], np.log(mixed) - np.log1p(-stay_mass(prev)))
    posterior = np.exp(log_post - log_post.max(axis=1, keepdims=True))
    posterior /= posterior.sum(axis=1, keepdims=True)

    # P(next) = sum_z P(z | prefix) T(next | z, last), T renormalised to exclude `last`.
    weight = posterior / (1 - stay_mass(last))
    rows = np.arange(len(last))
    successors = np.zeros((len(last), model.n_products))
    np.add.at(successors, (rows[:, None], model.successor_items[last]), model.successor_probs[last])
    found = weight.sum(axis=1, keepdims=True) * (
        w_succ * successors + w_jump * model.popularity
    ) + w_intent * (weight @ model.intent_items)
    found[rows, last] = 0.0

    probs = np.empty((n, model.n_products))
    probs[nonempty] = found
    probs[~nonempty] = model.intent_prior @ model.intent_items
    return probs


def latent_training_frame(config: GeneratorConfig, seed: int | None = None) -> pd.DataFrame:
    """The generator's hidden product chains shaped like dbt's `training_sessions` (>= 2 steps).

    What dbt recovers from the rendered events, without rendering or a warehouse: for model tests
    and benchmarks. Sessions start in order, one minute apart, so a split by time is by index.
    """
    model = build_model(config)
    rng = np.random.default_rng(config.seed if seed is None else seed)
    latent = sample_sessions(config, model, config.n_sessions, rng)
    skus = model.sku_hashes[latent.items].tolist()
    offsets = latent.offsets
    frame = pd.DataFrame(
        {
            "session_id": [f"s{i}" for i in range(config.n_sessions)],
            "skus": [skus[offsets[i] : offsets[i + 1]] for i in range(config.n_sessions)],
            "session_length": latent.lengths,
            "first_event_at": pd.Timestamp(config.start_date)
            + pd.to_timedelta(np.arange(config.n_sessions), "min"),
        }
    )
    return frame[frame["session_length"] >= 2].reset_index(drop=True)

"""Differential privacy of training jobs: the accountant, the plan of a private job, and its privacy statement.

A private job is DP-SGD with Poisson sampling: at each of ``steps`` steps every training row joins the batch
independently with probability ``sample_rate``; each row's gradient is clipped to L2 norm ``clip_norm`` and
Gaussian noise of standard deviation ``noise_multiplier * clip_norm`` is added to their sum. Its DP event is
``SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps)``, and dp-accounting (Google's accountant, 0.6.0)
turns that into epsilon at a delta, by the PLD accountant (tight) or the RDP accountant (looser, fast).

The plan is fixed before the job is created from public numbers only (the dataset's row count, the validation
split and the job's params), and the trainer uses exactly its ``sample_rate``, ``steps_per_epoch``,
``noise_multiplier``, ``clip_norm`` and ``expected_batch_size``, never the actual number of rows, so the
accountant's assumptions hold whatever the split turns out to be.

Pure Python (dp-accounting, NumPy, SciPy): the API process imports this module and must never load TensorFlow.

What accounting costs, measured here (2 shared cores): RDP takes 15-150 ms whatever the number of steps. PLD
(``value_discretization_interval`` 1e-4, dp-accounting's default, the one that gives the issue's figure) takes
10 ms to 0.7 s for the usual cases (epsilon below 10), up to 5 s when epsilon is large (sigma 0.3), and grows
with the number of steps (4 s at 2,000,000 steps, 17 s at 20,000,000, 10 s at 400,000,000). Hence the bounds:
at most ``PRIVACY_MAX_STEPS`` steps, sigma in [0.3, 100], epsilon at most 100, calibration under PLD stops after
``PRIVACY_CALIBRATION_SECONDS`` keeping the smallest sigma found that meets the target, and a budget composes
at most ``PRIVACY_MAX_BUDGET_JOBS`` jobs with PLD (20 jobs of 3,510 steps took 10 s; RDP 1 s, epsilon 7% higher),
more with RDP. Plans whose RDP epsilon is above twice the largest allowed are refused without computing PLD.
Calibration's deadline covers every PLD computation it makes (the step-up loop included: past it, a 400
``privacy_calibration_timeout``). Calibrations, planned epsilons and budget compositions are memoized per process
on their public numbers (``functools.lru_cache``), so ``services.create_job`` plans before its transaction and a
budget read again under the dataset's lock, or by ``GET .../privacy``, costs no accounting when nothing changed.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import time
from decimal import Decimal
from typing import Any

import dp_accounting
from django.conf import settings
from dp_accounting import pld, rdp

from core.errors import ServiceError

ACCOUNTANTS = ("pld", "rdp")
# The installed version (requirements pin 0.6.0), so the statement names the accountant that computed it.
DP_ACCOUNTING_VERSION = importlib.metadata.version("dp-accounting")
ACCOUNTANT_NAMES = {name: f"{name.upper()} (dp-accounting {DP_ACCOUNTING_VERSION})" for name in ACCOUNTANTS}
# dp-accounting's default: pessimistic rounding of the privacy loss to this grid (an upper bound of epsilon).
PLD_DISCRETIZATION = 1e-4

# The ranges a request may ask for.
TARGET_EPSILON_RANGE = (0.0, 100.0)  # (open, closed]
NOISE_MULTIPLIER_RANGE = (0.3, 100.0)  # closed
CLIP_NORM_RANGE = (0.0, 100.0)  # (open, closed]
MIN_DELTA = 1e-12
MAX_DEFAULT_DELTA = 1e-5
# Epsilon above this is no meaningful guarantee: a plan whose epsilon would exceed it is refused.
MAX_EPSILON = 100.0
RDP_REFUSAL_FACTOR = 2.0
# Dense per-example gradients held at once (float32) by the trainer (``training.trainer.private`` imports these):
# a step takes its per-example gradients in chunks of this many bytes, at most MAX_CHUNK_ROWS examples each, so
# memory does not grow with batch x parameters (an embedding's per-example gradient is dense).
PER_EXAMPLE_GRADIENT_BYTES = 256 * 1024 * 1024
MAX_CHUNK_ROWS = 4096
# Plans and compositions memoized per process (their inputs are public numbers; entries are a few floats).
PLAN_CACHE_SIZE = 512
# Calibration's precision: it stops once the target is met within this fraction (or the bracket is this narrow).
CALIBRATION_RELATIVE_TOLERANCE = 0.01

REQUEST_FIELDS = {
    "target_epsilon",
    "noise_multiplier",
    "delta",
    "clip_norm",
    "accountant",
    "reference",
    "accept_low_utility",
}

MECHANISM = "DP-SGD: per-example gradients clipped to L2 norm C, Gaussian noise of std sigma*C added to their sum"
SAMPLING = "Poisson: every row joins every step independently with probability q"
COVERS = (
    "the weights the network learned, in the published model and in every checkpoint (each is a prefix of the same run)"
)
# Outside the guarantee whatever the template: what DP-SGD does not produce, or only the tenant sees.
ALWAYS_OUTSIDE = (
    "the label names (the label values seen in the dataset)",
    "the training loss and validation metrics shown to the tenant",
)


def _invalid(field: str, message: str) -> ServiceError:
    return ServiceError(f"privacy.{field}: {message}", code="invalid_privacy", details={f"privacy.{field}": message})


def _number(request: dict[str, Any], field: str, low: float, high: float, *, low_open: bool, high_open: bool):
    """The field as a float within its range; ints are numbers, booleans and strings are not; NaN/inf refused."""
    value = request.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(field, "must be a number.")
    if isinstance(value, float) and not math.isfinite(value):
        raise _invalid(field, "must be a finite number.")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise _invalid(field, f"must be in {interval}.")
    return float(value)


def _boolean(request: dict[str, Any], field: str) -> bool:
    value = request.get(field, False)
    if not isinstance(value, bool):
        raise _invalid(field, "must be true or false.")
    return value


def validate_request(request: Any) -> dict[str, Any]:
    """The privacy request checked for shape, types and ranges (delta's upper bound needs N: see ``plan``).

    Returns it with defaults filled in. Raises 400 ``invalid_privacy`` naming the field.
    """
    if not isinstance(request, dict):
        raise ServiceError(
            "privacy must be a JSON object.", code="invalid_privacy", details={"privacy": "must be a JSON object."}
        )
    unknown = sorted(str(key)[:100] for key in request if key not in REQUEST_FIELDS)
    if unknown:
        raise ServiceError(
            f"privacy has unknown fields: {', '.join(unknown[:10])}.",
            code="invalid_privacy",
            details={f"privacy.{key}": "Unknown field." for key in unknown[:10]},
        )
    target = _number(request, "target_epsilon", *TARGET_EPSILON_RANGE, low_open=True, high_open=False)
    sigma = _number(request, "noise_multiplier", *NOISE_MULTIPLIER_RANGE, low_open=False, high_open=False)
    delta = _number(request, "delta", MIN_DELTA, 1.0, low_open=False, high_open=True)
    clip = _number(request, "clip_norm", *CLIP_NORM_RANGE, low_open=True, high_open=False)
    accountant = request.get("accountant", "pld")
    if accountant not in ACCOUNTANTS:  # also refuses non-strings (a list or a dict is never in the tuple)
        raise _invalid("accountant", f"must be one of {', '.join(ACCOUNTANTS)}.")
    if target is None and sigma is None:
        raise ServiceError(
            "privacy needs target_epsilon or noise_multiplier (or both).",
            code="invalid_privacy",
            details={"privacy.target_epsilon": "target_epsilon or noise_multiplier is required."},
        )
    return {
        "target_epsilon": target,
        "noise_multiplier": sigma,
        "delta": delta,
        "clip_norm": 1.0 if clip is None else clip,
        "accountant": accountant,
        "reference": _boolean(request, "reference"),
        "accept_low_utility": _boolean(request, "accept_low_utility"),
    }


# --- accounting --------------------------------------------------------------------------------


def dp_event(*, sample_rate: float, noise_multiplier: float, steps: int) -> dp_accounting.DpEvent:
    """The DP event of one private job: ``steps`` Poisson-sampled Gaussian steps."""
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), steps
    )


def plan_event(*, plan: dict[str, Any]) -> dp_accounting.DpEvent:
    """The DP event of a stored plan."""
    return dp_event(
        sample_rate=float(plan["sample_rate"]),
        noise_multiplier=float(plan["noise_multiplier"]),
        steps=int(plan["steps"]),
    )


def _accountant(accountant: str) -> dp_accounting.PrivacyAccountant:
    if accountant == "pld":
        return pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    if accountant == "rdp":
        return rdp.RdpAccountant()
    raise ValueError(f"unknown accountant {accountant!r}")


def event_epsilon(*, event: dp_accounting.DpEvent, delta: float, accountant: str) -> float:
    """Epsilon of ``event`` at ``delta`` by the named accountant (``inf`` when it cannot bound it)."""
    counter = _accountant(accountant)
    counter.compose(event)
    return float(counter.get_epsilon(delta))


def epsilon(*, sample_rate: float, noise_multiplier: float, steps: int, delta: float, accountant: str = "pld") -> float:
    """Epsilon of one private job's parameters at ``delta``."""
    event = dp_event(sample_rate=sample_rate, noise_multiplier=noise_multiplier, steps=steps)
    return event_epsilon(event=event, delta=delta, accountant=accountant)


def plan_epsilon(
    *, plan: dict[str, Any], steps: int | None = None, delta: float | None = None, accountant: str | None = None
) -> float:
    """Epsilon of a stored plan at its delta by its accountant, or of its first ``steps`` steps (a run stopped
    early: each checkpoint is a prefix of the run, covered by the epsilon of the steps it took)."""
    return epsilon(
        sample_rate=float(plan["sample_rate"]),
        noise_multiplier=float(plan["noise_multiplier"]),
        steps=int(plan["steps"] if steps is None else steps),
        delta=float(plan["delta"] if delta is None else delta),
        accountant=accountant or plan["accountant"],
    )


def merged_events(plans: list[dict[str, Any]]) -> list[dp_accounting.DpEvent]:
    """The plans' events, those with the same sample rate and noise multiplier merged into one of their summed
    steps (the same mechanism run T1 then T2 times is that mechanism run T1 + T2 times): a tenant re-running one
    configuration costs the accountant one event, not one per job."""
    return [dp_event(sample_rate=q, noise_multiplier=sigma, steps=total) for q, sigma, total in _merged(plans)]


def _merged(plans: list[dict[str, Any]]) -> tuple[tuple[float, float, int], ...]:
    """``merged_events`` as public numbers (sample rate, noise multiplier, summed steps), in the plans' order."""
    steps: dict[tuple[float, float], int] = {}
    for plan in plans:
        key = (float(plan["sample_rate"]), float(plan["noise_multiplier"]))
        steps[key] = steps.get(key, 0) + int(plan["steps"])
    return tuple((q, sigma, total) for (q, sigma), total in steps.items())


def composed_epsilon(*, plans: list[dict[str, Any]], delta: float, accountant: str) -> float:
    """Epsilon at ``delta`` of every plan's job run on the same rows (their events composed); 0 for none."""
    if not plans:
        return 0.0
    return event_epsilon(event=dp_accounting.ComposedDpEvent(merged_events(plans)), delta=delta, accountant=accountant)


def spent_and_after(
    *, plans: list[dict[str, Any]], extra: dict[str, Any] | None, delta: float, accountant: str
) -> tuple[float, float]:
    """Epsilon at ``delta`` of ``plans`` composed, and of ``plans`` plus ``extra``: one accountant composes them
    in turn, so checking a new job against a budget costs one pass over the jobs, not two."""
    added = None if extra is None else _event_key(extra)
    return _spent_and_after(_merged(plans), added, float(delta), accountant)


def _event_key(plan: dict[str, Any]) -> tuple[float, float, int]:
    return float(plan["sample_rate"]), float(plan["noise_multiplier"]), int(plan["steps"])


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _spent_and_after(
    merged: tuple[tuple[float, float, int], ...], extra: tuple[float, float, int] | None, delta: float, accountant: str
) -> tuple[float, float]:
    """``spent_and_after`` memoized on the merged events' public numbers, the extra plan's, delta and the
    accountant: a budget read again (``GET .../privacy``, a submission's check under the dataset's lock) after
    no job changed costs no accounting. Any change of the counted jobs changes the key."""
    counter = _accountant(accountant)
    for q, sigma, steps in merged:
        counter.compose(dp_event(sample_rate=q, noise_multiplier=sigma, steps=steps))
    before = float(counter.get_epsilon(delta)) if merged else 0.0
    if extra is None:
        return before, before
    q, sigma, steps = extra
    counter.compose(dp_event(sample_rate=q, noise_multiplier=sigma, steps=steps))
    return before, float(counter.get_epsilon(delta))


def budget_accountant(*, plans: list[dict[str, Any]]) -> str:
    """The accountant a budget composes with: the plans' own when they agree, else RDP (a bound for any mix)."""
    chosen = {plan.get("accountant", "pld") for plan in plans}
    return chosen.pop() if len(chosen) == 1 else "rdp"


def calibrate_noise_multiplier(
    *, sample_rate: float, steps: int, delta: float, target_epsilon: float, accountant: str = "pld"
) -> tuple[float, float]:
    """The smallest noise multiplier in [0.3, 100] whose epsilon at ``delta`` is at most ``target_epsilon``, and
    that epsilon.

    RDP first (cheap; dp-accounting's ``calibrate_dp_mechanism``): its sigma meets the target under RDP. For PLD,
    whose epsilon is lower, a search on log sigma below the RDP sigma follows, started by a Newton step with
    RDP's slope and continued by an Illinois secant, each step one PLD computation; it stops once the target is
    met within ``CALIBRATION_RELATIVE_TOLERANCE`` or after ``PRIVACY_CALIBRATION_SECONDS``, and always returns a
    sigma it has seen meet the target. Raises 400 ``privacy_target_unreachable`` when even sigma 100 does not.
    """
    low, high = NOISE_MULTIPLIER_RANGE

    def eps(sigma: float, which: str) -> float:
        return epsilon(sample_rate=sample_rate, noise_multiplier=sigma, steps=steps, delta=delta, accountant=which)

    at_low = eps(low, "rdp")
    if at_low <= target_epsilon:
        sigma_rdp: float | None = low
    elif eps(high, "rdp") > target_epsilon:
        sigma_rdp = None
    else:
        sigma_rdp = float(
            dp_accounting.calibrate_dp_mechanism(
                rdp.RdpAccountant,
                lambda sigma: dp_event(sample_rate=sample_rate, noise_multiplier=sigma, steps=steps),
                target_epsilon,
                delta,
                bracket_interval=dp_accounting.ExplicitBracketInterval(low, high),
                tol=1e-3,
            )
        )
    if accountant == "rdp":
        if sigma_rdp is None:
            raise _unreachable(target_epsilon=target_epsilon, epsilon_at_max=eps(high, "rdp"))
        return sigma_rdp, eps(sigma_rdp, "rdp")

    # One deadline for every PLD computation below, the step-up loop's included.
    deadline = time.monotonic() + settings.PRIVACY_CALIBRATION_SECONDS
    # The feasible end: the RDP sigma almost always meets the target under PLD too; when PLD's discretization
    # makes it looser (millions of steps), step up until it does, or refuse once the deadline has passed (no
    # sigma seen so far meets the target under PLD, so there is nothing honest to return).
    feasible = sigma_rdp if sigma_rdp is not None else high
    feasible_eps = eps(feasible, "pld")
    while feasible_eps > target_epsilon:
        if feasible >= high:
            raise _unreachable(target_epsilon=target_epsilon, epsilon_at_max=feasible_eps)
        if time.monotonic() >= deadline:
            raise ServiceError(
                f"Calibrating noise_multiplier for target_epsilon {target_epsilon:g} with the PLD accountant took "
                f"longer than {settings.PRIVACY_CALIBRATION_SECONDS} s. Use the rdp accountant, give a "
                "noise_multiplier, or use a larger batch_size or fewer epochs (fewer steps).",
                code="privacy_calibration_timeout",
                details={
                    "target_epsilon": target_epsilon,
                    "noise_multiplier_tried": feasible,
                    "epsilon_at_tried": _finite_or_none(feasible_eps),
                    "calibration_seconds": settings.PRIVACY_CALIBRATION_SECONDS,
                },
            )
        feasible = min(high, feasible * 1.25)
        feasible_eps = eps(feasible, "pld")
    if feasible <= low:
        return low, feasible_eps

    def close_enough() -> bool:
        return feasible_eps >= target_epsilon * (1 - CALIBRATION_RELATIVE_TOLERANCE) or feasible <= low

    # Newton step on (log sigma, log epsilon), nearly a line, with the slope RDP has there (two cheap points).
    log_target = math.log(target_epsilon)
    slope = (math.log(eps(feasible, "rdp")) - math.log(eps(feasible * 0.97, "rdp"))) / math.log(1 / 0.97)
    infeasible, infeasible_eps = low, math.inf
    while not close_enough() and time.monotonic() < deadline:
        if math.isfinite(infeasible_eps):
            break  # bracketed: the secant below takes over
        step = (log_target - math.log(feasible_eps)) / slope if slope < 0 else -0.1
        guess = max(low, feasible * math.exp(max(step * 1.02, -0.7)))  # aim a little past the target
        value = eps(guess, "pld")
        if value <= target_epsilon:
            feasible, feasible_eps = guess, value
        else:
            infeasible, infeasible_eps = guess, value
    if close_enough() or not math.isfinite(infeasible_eps):  # met, or out of time before a bracket was found
        return feasible, feasible_eps
    # Illinois secant between the bracket's ends.
    lo, hi = math.log(infeasible), math.log(feasible)
    f_lo = math.log(infeasible_eps) - log_target
    f_hi = math.log(feasible_eps) - log_target
    side = 0
    while not close_enough() and time.monotonic() < deadline and hi - lo > CALIBRATION_RELATIVE_TOLERANCE / 10:
        guess = hi - f_hi * (hi - lo) / (f_hi - f_lo) if f_hi != f_lo else (lo + hi) / 2
        guess = min(max(guess, lo + (hi - lo) * 0.02), hi - (hi - lo) * 0.02)  # strictly inside
        value = eps(math.exp(guess), "pld")
        f_guess = math.log(value) - log_target if value > 0 else -math.inf
        if f_guess <= 0:
            hi, f_hi, feasible, feasible_eps = guess, f_guess, math.exp(guess), value
            if side == 1:
                f_lo /= 2
            side = 1
        else:
            lo, f_lo = guess, f_guess
            if side == -1:
                f_hi /= 2
            side = -1
    return feasible, feasible_eps


def _unreachable(*, target_epsilon: float, epsilon_at_max: float) -> ServiceError:
    return ServiceError(
        f"target_epsilon {target_epsilon:g} cannot be met even with noise_multiplier {NOISE_MULTIPLIER_RANGE[1]:g} "
        f"(epsilon {epsilon_at_max:.3g}): use more rows, a larger batch_size relative to them, fewer epochs, or a "
        "larger target_epsilon.",
        code="privacy_target_unreachable",
        details={"target_epsilon": target_epsilon, "epsilon_at_max_noise": _finite_or_none(epsilon_at_max)},
    )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --- planning ----------------------------------------------------------------------------------


def planned_train_rows(*, row_count: int, validation_split: float) -> int:
    """N: the rows expected in the training split (the trainer's hash split keeps about 1 - split of them)."""
    return max(1, math.floor(row_count * (1.0 - validation_split)))


def default_delta(*, train_rows: int) -> float:
    """1 / (10 N) rounded down to one significant figure, at most 1e-5: below 1/N, as DP needs."""
    exact = Decimal(1) / (Decimal(10) * Decimal(train_rows))
    exponent = exact.adjusted()
    mantissa = int(exact.scaleb(-exponent))  # 1..9, rounded down
    return min(MAX_DEFAULT_DELTA, float(Decimal(mantissa).scaleb(exponent)))


def noise_ratio(*, noise_multiplier: float, expected_batch_size: int) -> float:
    """The noise's std on the averaged gradient relative to the clip norm: sigma * C / B over C."""
    return noise_multiplier / expected_batch_size


def plan(
    *,
    request: Any,
    row_count: int | None,
    validation_split: float,
    batch_size: int,
    epochs: int,
) -> dict[str, Any]:
    """Resolve a job's ``privacy`` request into its plan (the contract's keys, plus ``noise_ratio`` and
    ``warning``), or refuse with a 400 naming what to change.

    Cheap checks first (shape, size of the dataset, number of steps), accounting last.
    """
    wanted = validate_request(request)
    if not row_count:
        raise ServiceError(
            "The dataset's row count is unknown, so a private job cannot be planned.", code="privacy_unplannable"
        )
    rows = planned_train_rows(row_count=row_count, validation_split=validation_split)
    if rows > settings.PRIVACY_MAX_TRAIN_ROWS:
        raise ServiceError(
            f"Private training holds the training split in memory for Poisson sampling: at most "
            f"{settings.PRIVACY_MAX_TRAIN_ROWS} training rows; this dataset has about {rows}.",
            code="privacy_dataset_too_large",
            details={"planned_train_rows": rows, "max_train_rows": settings.PRIVACY_MAX_TRAIN_ROWS},
        )
    if batch_size > rows:
        raise ServiceError(
            f"batch_size {batch_size} is larger than the about {rows} training rows; a private job samples "
            "batch_size rows in expectation from them.",
            code="privacy_batch_too_large",
            details={"batch_size": batch_size, "planned_train_rows": rows},
        )
    delta = wanted["delta"]
    if delta is None:
        delta = default_delta(train_rows=rows)
    elif delta >= 1.0 / rows:
        raise _invalid("delta", f"must be below 1/N = {1.0 / rows:.3g} (N = {rows} planned training rows).")
    sample_rate = batch_size / rows
    steps_per_epoch = max(1, round(1.0 / sample_rate))
    steps = epochs * steps_per_epoch
    if steps > settings.PRIVACY_MAX_STEPS:
        raise ServiceError(
            f"This private job would take {steps} steps ({epochs} epochs of {steps_per_epoch}); at most "
            f"{settings.PRIVACY_MAX_STEPS}. Use a larger batch_size or fewer epochs.",
            code="privacy_too_many_steps",
            details={"steps": steps, "max_steps": settings.PRIVACY_MAX_STEPS},
        )
    accountant = wanted["accountant"]
    target = wanted["target_epsilon"]
    sigma = wanted["noise_multiplier"]
    eps = None
    if sigma is None:
        sigma, eps = _calibrated(sample_rate, steps, delta, target, accountant, settings.PRIVACY_CALIBRATION_SECONDS)
    # Before the (slower) planned epsilon: a plan nobody would accept is refused at once.
    ratio = noise_ratio(noise_multiplier=sigma, expected_batch_size=batch_size)
    warning = _utility_check(
        ratio=ratio,
        accept=wanted["accept_low_utility"],
        figures={
            "noise_ratio": ratio,
            "max_noise_ratio": settings.PRIVACY_MAX_NOISE_RATIO,
            "noise_multiplier": sigma,
            "batch_size": batch_size,
            "planned_train_rows": rows,
            "epochs": epochs,
            "target_epsilon": target,
        },
    )
    if steps < settings.PRIVACY_FEW_STEPS:
        few = (
            f"Only {steps} private steps ({epochs} epochs of {steps_per_epoch}): clipping bounds each step's "
            "progress, so private models usually need more steps than plain ones; more epochs or a smaller "
            "batch_size give more (each costs some epsilon, or some noise)."
        )
        warning = f"{warning} {few}" if warning else few
    eps_rdp, planned = _planned_epsilons(sample_rate, sigma, steps, delta, accountant)
    if eps is None:
        eps = planned
    if target is not None and eps > target:
        raise ServiceError(
            f"With noise_multiplier {sigma:g}, epsilon would be {eps:.3g}, above target_epsilon {target:g}. Leave "
            "out noise_multiplier to have it calibrated, or raise it.",
            code="privacy_target_not_met",
            details={"epsilon": _finite_or_none(eps), "target_epsilon": target, "noise_multiplier": sigma},
        )
    if not eps <= MAX_EPSILON:
        raise ServiceError(
            f"With noise_multiplier {sigma:g}, epsilon would be {eps:.3g}: above {MAX_EPSILON:g} it is no meaningful "
            "guarantee. Raise noise_multiplier, or use more rows, a larger batch_size or fewer epochs.",
            code="privacy_epsilon_too_large",
            details={"epsilon": _finite_or_none(eps), "max_epsilon": MAX_EPSILON, "noise_multiplier": sigma},
        )
    return {
        "noise_multiplier": sigma,
        "clip_norm": wanted["clip_norm"],
        "delta": delta,
        "target_epsilon": target,
        "epsilon": eps,
        "epsilon_rdp": eps_rdp,
        "accountant": accountant,
        "sampling": "poisson",
        "sample_rate": sample_rate,
        "steps_per_epoch": steps_per_epoch,
        "steps": steps,
        "expected_batch_size": batch_size,
        "planned_train_rows": rows,
        "reference": wanted["reference"],
        "accept_low_utility": wanted["accept_low_utility"],
        "noise_ratio": ratio,
        "warning": warning,
    }


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _calibrated(
    sample_rate: float, steps: int, delta: float, target_epsilon: float, accountant: str, seconds: int
) -> tuple[float, float]:
    """``calibrate_noise_multiplier`` memoized on its public inputs (and the time it may take): resubmitting a
    job, or submitting the same configuration again, costs no accounting. A refusal is not memoized."""
    return calibrate_noise_multiplier(
        sample_rate=sample_rate, steps=steps, delta=delta, target_epsilon=target_epsilon, accountant=accountant
    )


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _planned_epsilons(
    sample_rate: float, noise_multiplier: float, steps: int, delta: float, accountant: str
) -> tuple[float, float]:
    """A plan's RDP epsilon and its epsilon by ``accountant``, memoized on their public inputs.

    PLD costs seconds exactly when epsilon is huge; it is never far below RDP there (within 15% in every case
    measured), so when RDP's figure is this far past the limit it stands for both and PLD is not computed.
    """
    figures = {"sample_rate": sample_rate, "noise_multiplier": noise_multiplier, "steps": steps, "delta": delta}
    eps_rdp = epsilon(**figures, accountant="rdp")
    if accountant == "rdp" or not eps_rdp <= RDP_REFUSAL_FACTOR * MAX_EPSILON:
        return eps_rdp, eps_rdp
    return eps_rdp, epsilon(**figures, accountant="pld")


def _utility_check(*, ratio: float, accept: bool, figures: dict[str, Any]) -> str | None:
    """Refuse (400 ``privacy_low_utility``) or, with ``accept_low_utility``, warn about a plan whose noise drowns
    the gradient: above ``PRIVACY_MAX_NOISE_RATIO`` the model is unlikely to learn anything."""
    limit = settings.PRIVACY_MAX_NOISE_RATIO
    if ratio <= limit:
        return None
    message = (
        f"The noise on each averaged gradient would be {ratio:.3g} of the clip norm (noise_multiplier "
        f"{figures['noise_multiplier']:.3g} / batch_size {figures['batch_size']}), above {limit:g}: the model is "
        "unlikely to learn more than chance. What helps: more rows (the dataset has about "
        f"{figures['planned_train_rows']} training rows), a larger batch_size, fewer epochs (now "
        f"{figures['epochs']}), or a larger target_epsilon."
    )
    if not accept:
        raise ServiceError(
            message + " Set privacy.accept_low_utility to train anyway.",
            code="privacy_low_utility",
            details=figures,
        )
    return message


def statement(*, plan: dict[str, Any], learned_from_data: tuple[str, ...] = ()) -> dict[str, Any]:
    """The privacy statement of a version trained with ``plan`` (its manifest's ``"privacy"``), in the form
    "How to DP-fy ML" (2023) recommends: unit, adjacency, mechanism, accountant, sampling, epsilon and delta,
    what the guarantee covers and, as plainly, what it does not: ``learned_from_data`` is what the template's
    preprocessing took from the training rows themselves (``Template.learned_from_data``), which the model
    carries outside DP-SGD."""
    steps_per_epoch = int(plan["steps_per_epoch"])
    return {
        "mechanism": MECHANISM,
        "privacy_unit": "one row of the dataset",
        "adjacency": "add or remove one row",
        "accountant": ACCOUNTANT_NAMES[plan["accountant"]],
        "sampling": SAMPLING,
        "epsilon": plan["epsilon"],
        "delta": plan["delta"],
        "epsilon_rdp": plan["epsilon_rdp"],
        "noise_multiplier": plan["noise_multiplier"],
        "clip_norm": plan["clip_norm"],
        "sample_rate": plan["sample_rate"],
        "steps": plan["steps"],
        "epochs": int(plan["steps"]) // max(1, steps_per_epoch),
        "expected_batch_size": plan["expected_batch_size"],
        "covers": COVERS,
        "not_covered": [*learned_from_data, *ALWAYS_OUTSIDE],
    }


def per_example_chunk_rows(*, parameters: int) -> int:
    """Examples whose dense float32 gradients the trainer holds at once: as many as fit
    ``PER_EXAMPLE_GRADIENT_BYTES`` (at most ``MAX_CHUNK_ROWS``, at least one)."""
    return max(1, min(MAX_CHUNK_ROWS, PER_EXAMPLE_GRADIENT_BYTES // max(1, 4 * parameters)))


def per_example_gradient_bytes(*, parameters: int, batch_size: int) -> int:
    """Memory of the per-example gradients a DP-SGD step holds at once: the trainer
    (``training.trainer.private``) takes them in chunks of ``per_example_chunk_rows`` examples, so it is
    min(batch, chunk) x parameters x 4 bytes (at least one example), the same model the trainer runs."""
    rows = max(1, min(int(batch_size), per_example_chunk_rows(parameters=parameters)))
    return rows * parameters * 4

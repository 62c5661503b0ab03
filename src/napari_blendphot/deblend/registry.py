"""Deblending methods by name, and what each one can do.

Every method the CLI, the GUI and the inference engine can run is registered
here under a short name (the results-table column suffix, ``g1_flux_<name>``)
with its *capabilities*: what the callers need to know before creating it.
No other module keeps a list of method names; a question such as "does this
method take a weights file?" is asked of :func:`method_info`.

Capabilities (:class:`MethodInfo`)
----------------------------------
``makes_masks``
    returns the two galaxy masks (IoU columns, mask layers);
``needs_worker``
    must run in the inference worker process (anything that imports Keras,
    TensorFlow, JAX or PyTorch, SPEC §8);
``uses_keras``
    runs a Keras network (needs a Keras backend; its results depend on it);
``accepts_weights``
    takes ``weights=`` (a ``.keras`` file or a shipped model name): the GUI
    shows a weights button, ``blendphot predict --weights NAME=PATH`` accepts it;
``network``
    the network architecture whose shipped model is the default ``weights``
    (None: the user must choose a file);
``precisions``
    the compute precisions it accepts through ``precision=`` (the GUI's and
    ``--precision``'s choice; :mod:`napari_blendphot.models.precision`);
``parallel``
    spreads a batch over several cores itself (takes ``n_jobs=``; the engine
    gives it every core);
``wants_gpu``
    runs faster on a GPU;
``flux_errors``
    gives 1-sigma flux errors (``DeblendOutput.flux_errors``);
``tta``
    takes ``tta=1, 2, 4 or 8``: averages its outputs over that many symmetries
    of the blend about the central galaxy (test-time augmentation; the network
    methods, :func:`napari_blendphot.deblend.keras_methods.square_symmetry`);
``reuses_masks_of``
    the methods whose masks it takes instead of computing its own when they
    have just run on the same blends with the same network weights (the
    ``unet`` method and blend2mask2flux's U-Net): callers run it after them
    (:func:`execution_order`); the results are those of its own pass.

Built-in methods
----------------
``sep``
    Two-pass SEP baseline with Kron fluxes (FLUX_AUTO, neighbours blanked as
    SExtractor's MASK_TYPE BLANK), :class:`~napari_blendphot.deblend.sep_baseline.SepTwoPass`.
``seppaper``
    The paper's configuration of the same two passes: no background
    subtraction, isophotal fluxes (:class:`~napari_blendphot.deblend.sep_baseline.SepPaper`).
``sextractor``
    The SExtractor binary in the same two passes, FLUX_AUTO with its default
    MASK_TYPE CORRECT (:mod:`~napari_blendphot.deblend.sextractor`; needs the
    ``source-extractor`` program).
``photutils``
    photutils' detect_sources + deblend_sources + SourceCatalog Kron fluxes
    with the same thresholds (:mod:`~napari_blendphot.deblend.photutils_method`).
``scarlet2``
    scarlet2 models initialised from the sep detections (optional extra
    ``scarlet2``: JAX; :mod:`~napari_blendphot.deblend.scarlet2_method`).
``blend2flux``
    CNN regressing both fluxes from the blend.
``unet``
    U-Net masks; fluxes are the blend summed inside each mask (threshold 0.5).
``blend2mask2flux``
    U-Net masks followed by a CNN on [blend, masks] for the fluxes.

Third-party methods
-------------------
A package adds a method without touching this one by declaring an entry point
in the group ``napari_blendphot.methods``::

    [project.entry-points."napari_blendphot.methods"]
    mymethod = "my_package.deblend:MyDeblender"

The entry point's name is the method name; the object it points to is a
factory (usually the class) called as ``factory(**options)`` that returns a
:class:`~napari_blendphot.deblend.base.Deblender`.  The factory may carry the
attribute ``label`` and any capability above as attributes (class attributes
of a Deblender class do; a subclass of
:class:`~napari_blendphot.deblend.keras_methods.KerasDeblender` inherits
``uses_keras``, ``accepts_weights`` and ``precisions``); missing ones default
to the name, False (``needs_worker``: True, since running in the worker is
always safe) and ``()``.  Entry points are only loaded when a method's details
are asked for, so listing methods never imports third-party code.  Methods
registered at run time with :func:`register_method` take precedence over
entry points of the same name.
A factory may also carry ``unavailable_reason``, a callable returning why the
method cannot run here (a missing program or package, with the install hint)
or None.

This module imports no Keras: factories of built-in methods are given as
``"module:attribute"`` strings and resolved only when a method is created
(inside the worker process for Keras methods).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Callable, Union

from napari_blendphot.errors import InputError

#: Entry-point group through which other packages register methods.
ENTRY_POINT_GROUP = "napari_blendphot.methods"

Factory = Union[Callable[..., object], str]

_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*$")


@dataclass(frozen=True)
class MethodInfo:
    """What is known about a registered method without creating it.

    Attributes
    ----------
    name : str
        Registry key and results-table column suffix.
    label : str
        Human-readable name.
    makes_masks : bool
        Whether the method returns the two galaxy masks.
    needs_worker : bool
        Whether the method must run in the inference worker process.
    factory : callable or str
        ``factory(**options) -> Deblender``, or ``"module:attribute"`` naming it.
    description : str
        One line for ``--help`` texts and tooltips.
    origin : str
        ``"builtin"``, ``"runtime"`` (register_method) or ``"entry point <value>"``.
    uses_keras, accepts_weights, network, precisions, parallel, wants_gpu, flux_errors, tta, reuses_masks_of
        Capabilities: see the module's documentation.
    short_label, color : str
        How reports and figures show the method ("" for the name and a colour by position).
    line_style : str
        How its mask outlines and curves are drawn: ``"solid"``, ``"dashed"``,
        ``"dotted"`` or ``"dashdot"`` (matplotlib's names; "" for one by
        position), so that methods differ by more than colour
        (:func:`napari_blendphot.display.method_style`).
    check : callable or str
        ``check() -> str | None`` (or ``"module:attribute"`` naming it): why the
        method cannot run here (a missing program or optional package, with the
        install hint), None when it can; ``""`` = always available.  It must be
        cheap and import nothing heavy: it runs whenever methods are listed or
        selected.
    default_run : bool
        Part of the default set (``blendphot predict`` without ``--methods``, the
        Inspector's ticked boxes); comparison methods are opt-in.
    default_weights : str
        The shipped model a method that takes weights loads without ``weights=``
        ("" for its network's default model): :func:`shipped_model_of`.
    """

    name: str
    label: str
    makes_masks: bool
    needs_worker: bool
    factory: Factory
    description: str = ""
    origin: str = "runtime"
    uses_keras: bool = False
    accepts_weights: bool = False
    network: str | None = None
    precisions: tuple = ()
    parallel: bool = False
    wants_gpu: bool = False
    flux_errors: bool = False
    tta: bool = False
    reuses_masks_of: tuple = ()
    short_label: str = ""
    color: str = ""
    line_style: str = ""
    check: Factory = ""
    default_run: bool = True
    default_weights: str = ""

    @property
    def capabilities(self) -> dict:
        """``{capability: value}`` (for tooltips, ``--help`` and tests)."""
        return {name: getattr(self, name) for name in CAPABILITIES}

    def resolve_factory(self) -> Callable[..., object]:
        """The factory callable (imports its module if given as a string)."""
        return _resolve(self.factory, self.name)


#: Capability attributes of :class:`MethodInfo` (also read from a factory's attributes).
CAPABILITIES = ("makes_masks", "needs_worker", "uses_keras", "accepts_weights", "network", "precisions", "parallel",
                "wants_gpu", "flux_errors", "tta", "reuses_masks_of")
#: Line styles a method's outlines and curves can have (matplotlib's names).
LINE_STYLES = ("solid", "dashed", "dotted", "dashdot")
#: Precisions of the Keras methods (:data:`napari_blendphot.models.precision.PRECISIONS`, not imported here).
_KERAS_PRECISIONS = ("float32", "bfloat16", "auto")
_KERAS = {"needs_worker": True, "uses_keras": True, "accepts_weights": True, "precisions": _KERAS_PRECISIONS,
          "wants_gpu": True, "tta": True}

_BUILTINS = (
    MethodInfo("sep", "SEP two-pass, Kron FLUX_AUTO, MASK_TYPE BLANK", True, False,
               "napari_blendphot.deblend.sep_baseline:SepTwoPass",
               "classical baseline: sep detection in a cold then a hot pass, background subtracted, Kron "
               "(FLUX_AUTO-like) fluxes with the neighbours' pixels left out (SExtractor's MASK_TYPE BLANK)", "builtin",
               parallel=True, flux_errors=True, short_label="SEP", color="#d1495b", line_style="dashed"),
    MethodInfo("blend2flux", "blend2flux (CNN)", False, factory="napari_blendphot.deblend.keras_methods:Blend2FluxDeblender",
               description="CNN regressing the fluxes of both galaxies from the blend (Boucaud et al. 2020)",
               origin="builtin", network="blend2flux", short_label="blend2flux", color="#1f6fb4", line_style="solid",
               **_KERAS),
    MethodInfo("unet", "U-Net masks + flux in mask", True, factory="napari_blendphot.deblend.keras_methods:UNetDeblender",
               description="U-Net segmentation; each flux is the blend summed inside its mask (> 0.5)",
               origin="builtin", network="unet", short_label="unet", color="#7b4fa0", line_style="dotted",
               reuses_masks_of=("blend2mask2flux",), **_KERAS),
    MethodInfo("blend2mask2flux", "blend2mask2flux (U-Net + CNN)", True,
               factory="napari_blendphot.deblend.keras_methods:Blend2Mask2FluxDeblender",
               description="U-Net masks then a CNN on blend + masks for the fluxes (Boucaud et al. 2020)",
               origin="builtin", network="blend2mask2flux", short_label="blend2mask2flux", color="#2a9d4b",
               line_style="solid", **_KERAS),
    MethodInfo("ensemble", "blend2flux deep ensemble", False,
               factory="napari_blendphot.deblend.keras_methods:EnsembleDeblender",
               description="independently trained blend2flux CNNs averaged; their spread is added to the flux "
                           "error (the model's own uncertainty); costs one blend2flux pass per member",
               origin="builtin", network="blend2flux", short_label="ensemble", color="#d9a21b", line_style="dashdot",
               default_run=False, default_weights="blend2flux_ensemble_v5", **_KERAS),
    MethodInfo("seppaper", "SEP two-pass, paper set-up (isophotal, no background)", True, False,
               "napari_blendphot.deblend.sep_baseline:SepPaper",
               "the paper's own baseline: the sep two-pass without background subtraction, isophotal fluxes "
               "(Boucaud et al. 2020's 'SExtractor' numbers)", "builtin",
               parallel=True, flux_errors=True, short_label="SEP (paper)", color="#8c564b", line_style="dotted",
               default_run=False),
    MethodInfo("sextractor", "SExtractor two-pass (FLUX_AUTO, MASK_TYPE CORRECT)", True, False,
               "napari_blendphot.deblend.sextractor:SExtractorTwoPass",
               "the SExtractor program in the same two passes, FLUX_AUTO with its default MASK_TYPE CORRECT",
               "builtin", flux_errors=True, short_label="SExtractor", color="#e377c2", line_style="dashdot",
               check="napari_blendphot.deblend.sextractor:unavailable_reason", default_run=False),
    MethodInfo("photutils", "photutils (segmentation + deblending, Kron flux)", True, False,
               "napari_blendphot.deblend.photutils_method:PhotutilsTwoPass",
               "photutils detect_sources + deblend_sources in the same two passes, SourceCatalog Kron fluxes",
               "builtin", flux_errors=True, short_label="photutils", color="#7f7f7f", line_style="dashed",
               check="napari_blendphot.deblend.photutils_method:unavailable_reason", default_run=False),
    MethodInfo("scarlet2", "scarlet2 (models from the sep detections)", True, True,
               "napari_blendphot.deblend.scarlet2_method:Scarlet2Deblender",
               "scarlet2 (JAX) source models initialised from the sep two-pass detections; fluxes and masks "
               "from the fitted models", "builtin", flux_errors=True, wants_gpu=True, short_label="scarlet2",
               color="#17becf", line_style="dashdot", check="napari_blendphot.deblend.scarlet2_method:unavailable_reason",
               default_run=False),
)

_registry: dict[str, MethodInfo] = {info.name: info for info in _BUILTINS}


def register_method(name: str, factory: Factory, *, label: str | None = None, makes_masks: bool = False,
                    needs_worker: bool = True, description: str = "", replace: bool = False,
                    check: Factory = "", default_run: bool = True, short_label: str = "", color: str = "",
                    line_style: str = "", default_weights: str = "", **capabilities) -> MethodInfo:
    """Register a deblending method under *name*.

    Parameters
    ----------
    name : str
        Lower-case letters and digits, starting with a letter (it becomes a
        column suffix, so no underscores).
    factory : callable or str
        ``factory(**options)`` returns a Deblender; a ``"module:attribute"``
        string is imported only when the method is created.  To run in the
        inference worker the factory must be importable there (a module-level
        class or function, not a lambda or a class defined in ``__main__`` of
        an interactive session).
    label, makes_masks, needs_worker, description
        See :class:`MethodInfo`.  ``needs_worker`` defaults to True.
    replace : bool
        Allow replacing an existing registration (built-ins included).
    capabilities
        ``uses_keras``, ``accepts_weights``, ``network``, ``precisions``,
        ``parallel``, ``wants_gpu``, ``flux_errors``, ``tta``, ``reuses_masks_of`` (see the module's documentation).
    check : callable or str, optional
        Availability check, see :class:`MethodInfo`.
    default_run : bool, optional
        Part of the default set of methods (see :class:`MethodInfo`).
    short_label, color, line_style : str, optional
        How views draw it (see :class:`MethodInfo`); "" for a choice by position.
    default_weights : str, optional
        The shipped model it runs without weights ("" for its network's default).

    Returns
    -------
    MethodInfo
    """
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise InputError(f"method name {name!r}", "must be lower-case letters and digits, starting with a letter")
    if name in _registry and not replace:
        raise InputError(f"method {name!r}", "is already registered", "pass replace=True to override it")
    if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise InputError(f"factory of method {name!r}", "must be a callable or a 'module:attribute' string")
    unknown = sorted(set(capabilities) - set(CAPABILITIES))
    if unknown:
        raise InputError(f"method {name!r}", f"unknown capability {unknown}", f"known: {', '.join(CAPABILITIES)}")
    if check and not (callable(check) or (isinstance(check, str) and ":" in check)):
        raise InputError(f"check of method {name!r}", "must be a callable or a 'module:attribute' string")
    if line_style and line_style not in LINE_STYLES:
        raise InputError(f"line_style of method {name!r}", f"unknown {line_style!r}", f"use one of {LINE_STYLES}")
    info = MethodInfo(name, label or name, bool(makes_masks), bool(needs_worker), factory, description, "runtime",
                      check=check, default_run=bool(default_run), short_label=str(short_label), color=str(color),
                      line_style=str(line_style), default_weights=str(default_weights),
                      **_checked_capabilities(capabilities, name))
    _registry[name] = info
    return info


def _checked_capabilities(values: dict, name: str) -> dict:
    """Capabilities in their canonical types (bools, a tuple of precisions, a network name or None)."""
    out = {}
    for key, value in values.items():
        if key in ("makes_masks", "needs_worker"):
            continue
        if key in ("precisions", "reuses_masks_of"):
            value = (value,) if isinstance(value, str) else tuple(str(p) for p in (value or ()))
        elif key == "network":
            value = None if value is None else str(value)
        else:
            value = bool(value)
        out[key] = value
    return out


def execution_order(names) -> list[str]:
    """*names* in the order to run them: each method before those that reuse its masks, otherwise as given.

    The results keep the order the user gave; only the computing order moves.
    """
    ordered: list[str] = []
    for name in names:
        waiting = [index for index, placed in enumerate(ordered) if name in method_info(placed).reuses_masks_of]
        ordered.insert(waiting[0] if waiting else len(ordered), name)
    return ordered


def _known_line_style(value) -> str:
    """A third-party method's ``line_style`` attribute if it is one of :data:`LINE_STYLES`, else "" (by position)."""
    return value if value in LINE_STYLES else ""


def unregister_method(name: str) -> None:
    """Remove a method registered at run time (built-ins are restored, not removed)."""
    builtin = {info.name: info for info in _BUILTINS}
    if name in builtin:
        _registry[name] = builtin[name]
    else:
        _registry.pop(name, None)


def _entry_points() -> dict:
    """Entry points of :data:`ENTRY_POINT_GROUP` by name (not loaded)."""
    from importlib.metadata import entry_points

    try:
        found = entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # pragma: no cover - Python < 3.10 API
        found = entry_points().get(ENTRY_POINT_GROUP, ())
    return {ep.name: ep for ep in found if _NAME_PATTERN.match(ep.name)}


def available_methods() -> tuple[str, ...]:
    """Names of all methods: built-ins first, then run-time and entry-point ones, sorted."""
    builtin = [info.name for info in _BUILTINS]
    others = sorted((set(_registry) | set(_entry_points())) - set(builtin))
    return (*builtin, *others)


def method_info(name: str) -> MethodInfo:
    """The :class:`MethodInfo` of *name* (loads its entry point if it comes from one).

    Raises
    ------
    InputError
        If no method of that name exists; the message lists the known ones.
    """
    if name in _registry:
        return _registry[name]
    entry_point = _entry_points().get(name)
    if entry_point is None:
        raise InputError(f"method {name!r}", "is not a known deblending method",
                         f"available: {', '.join(available_methods())}")
    try:
        factory = entry_point.load()
    except Exception as exc:
        raise InputError(f"method {name!r}", f"its entry point {entry_point.value!r} failed to load: {exc}") from exc
    capabilities = _checked_capabilities({key: getattr(factory, key) for key in CAPABILITIES
                                          if hasattr(factory, key)}, name)
    check = getattr(factory, "unavailable_reason", None)
    info = MethodInfo(name, str(getattr(factory, "label", name)), bool(getattr(factory, "makes_masks", False)),
                      bool(getattr(factory, "needs_worker", True)), entry_point.value,
                      str(getattr(factory, "description", "") or ""), f"entry point {entry_point.value}",
                      check=check if callable(check) else "", default_run=bool(getattr(factory, "default_run", True)),
                      short_label=str(getattr(factory, "short_label", "") or ""),
                      color=str(getattr(factory, "color", "") or ""),
                      default_weights=str(getattr(factory, "default_weights", "") or ""),
                      line_style=_known_line_style(getattr(factory, "line_style", "")), **capabilities)
    _registry[name] = info
    return info


def unavailable_reason(name: str) -> str | None:
    """Why the method *name* cannot run here (its check's answer), or None if it can.

    A check that itself fails counts as the reason, so a broken optional
    install is reported, not raised.
    """
    info = method_info(name)
    if not info.check:
        return None
    try:
        reason = _resolve(info.check, name)()
    except InputError as exc:
        return str(exc)
    except Exception as exc:  # a third-party check may raise anything
        return f"its availability check failed: {type(exc).__name__}: {exc}"
    return str(reason) if reason else None


def check_available(name: str) -> None:
    """Raise :class:`InputError` (one line, with the install hint) if *name* cannot run here."""
    reason = unavailable_reason(name)
    if reason:
        raise InputError(f"method {name!r}", f"is not available here: {reason}")


def create_method(name: str, **options):
    """Create the method *name* with *options* (passed to its factory).

    Keras methods import Keras here: call this only in the inference worker
    process (the engine does), never in a process that runs napari.

    Raises
    ------
    InputError
        Unknown method, a method not available here (missing program or
        optional package), or options the factory does not accept.
    """
    info = method_info(name)
    check_available(name)
    factory = info.resolve_factory()
    try:
        method = factory(**options)
    except TypeError as exc:
        if "argument" in str(exc):
            raise InputError(f"options of method {name!r}", f"{sorted(options)} not accepted: {exc}") from exc
        raise
    for attribute in ("name", "deblend"):
        if not hasattr(method, attribute):
            raise InputError(f"method {name!r}", f"its factory returned {type(method).__name__}, "
                             f"which has no {attribute!r} (not a Deblender)")
    return method


def display_of(name: str) -> tuple[str, str]:
    """``(short label, colour)`` of a registered method for reports and figures; ``("", "")`` when unknown."""
    if name not in _registry:  # not registered at run time nor built in: do not load entry points for a label
        return "", ""
    info = _registry[name]
    return info.short_label, info.color


def shipped_model_of(name: str):
    """The shipped model's manifest that method *name* runs without ``weights=`` (None: none installed or needed).

    Its own (:attr:`MethodInfo.default_weights`) where it names one, else its
    network's default (``models.manifests.default_model``).  An unreadable
    manifest raises :class:`InputError` naming it.
    """
    info = method_info(name)
    if not info.accepts_weights or info.network is None:
        return None
    from napari_blendphot.models.manifests import default_model, shipped_model

    return shipped_model(info.default_weights) if info.default_weights else default_model(info.network)


def builtin_methods() -> tuple[str, ...]:
    """The methods that come with the package."""
    return tuple(info.name for info in _BUILTINS)


def default_methods() -> tuple[str, ...]:
    """The methods run when none are chosen (``blendphot predict``, the Inspector): the built-ins that are
    not opt-in comparisons (:attr:`MethodInfo.default_run`) and can run here."""
    return tuple(info.name for info in _BUILTINS if info.default_run and not unavailable_reason(info.name))


def methods_with(**capabilities) -> tuple[str, ...]:
    """Names of the available methods whose capabilities have the given values.

    ``methods_with(accepts_weights=True)`` lists the methods that take a
    weights file.  Entry points are loaded to answer (their attributes hold
    the capabilities); one that fails to load is left out.
    """
    unknown = sorted(set(capabilities) - set(CAPABILITIES))
    if unknown:
        raise InputError("capabilities", f"unknown {unknown}", f"known: {', '.join(CAPABILITIES)}")
    names = []
    for name in available_methods():
        try:
            info = method_info(name)
        except InputError:
            continue
        if all(getattr(info, key) == value for key, value in capabilities.items()):
            names.append(name)
    return tuple(names)


def parse_method_list(text: str) -> list[str]:
    """``"sep,unet"`` -> ``["sep", "unet"]``, checking every name and refusing duplicates.

    A method that cannot run here (:func:`unavailable_reason`) is refused now,
    with the install hint, rather than when the worker creates it.
    """
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    if not names:
        raise InputError("methods", "no method given", f"choose from {', '.join(available_methods())}")
    for name in names:
        method_info(name)
        check_available(name)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError("methods", f"listed more than once: {', '.join(duplicates)}")
    return names


def _resolve(factory: Factory, name: str) -> Callable[..., object]:
    if callable(factory):
        return factory
    module_name, _, attribute = factory.partition(":")
    try:
        target = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"method {name!r}", f"cannot import its implementation {factory!r}: {exc}") from exc
    return target

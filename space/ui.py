"""The Space's page: Gradio Blocks with the tabs Search, Preview & blend, Inspect, Train and Push.

The handlers are thin: they call :mod:`lorahub.space.callbacks` and turn every error into one readable
line in the tab's status box (never a stack trace). Every handler treats its inputs as a stranger's:
files must be uploads of this page, pushes go to allowed endpoints with the typed token only, and heavy
work is rate-limited per client (:mod:`lorahub.space.guard`). The page is always served through
:func:`mount` (``lorahub serve --ui``, ``lorahub space``, the Hugging Face Space's ``app.py``), which
applies the guard's Gradio settings and its gate. Import this module only where Gradio is installed.
"""


import functools
import logging
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from lorahub.errors import LorahubError, UsageError

from . import callbacks as cb
from . import guard
from .gpu import on_gpu

log = logging.getLogger("lorahub.space")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

#: Small renders (the drawing base's 64 px images) shown enlarged with square pixels: the browser's smoothing
#: would blur a 64 px image shown at 512 into a smear.
#: (The search cards enlarge their samples themselves, by whole factors: cards are shown smaller than drawn.)
CSS = """
#preview-image img, #search-grid img, #train-samples img { image-rendering: pixelated; }
#preview-image img { width: 100%; height: 100%; object-fit: contain; }
"""

INTRO = """# lorahub
Search, preview, blend, inspect, train and push LoRA adapters for Stable Diffusion (1.x, SDXL, 3.5) and Flux.1.
Base model: `{base}`."""


def error_text(exc: BaseException) -> str:
    """One readable line for an error (no traceback)."""
    if isinstance(exc, LorahubError):
        msg = str(exc)
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        msg = f"unexpected error ({type(exc).__name__}){': ' + first if first else ''}"
    return f"**Error:** {msg}"


def _guard(n_outputs: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a handler; on error leave every output but the last (the status) unchanged and put the message
    there. For generators, errors raised midway are reported the same way."""
    import gradio as gr

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        def fail(exc: BaseException) -> Any:
            if not isinstance(exc, LorahubError):
                log.warning("space handler %s failed: %s: %s", fn.__name__, type(exc).__name__, exc)
            out = [gr.skip()] * (n_outputs - 1) + [error_text(exc)]
            return out[0] if n_outputs == 1 else tuple(out)

        import inspect as _inspect

        if _inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen(*args: Any, **kw: Any) -> Any:
                try:
                    yield from fn(*args, **kw)
                except Exception as exc:  # noqa: BLE001 - shown as one line in the page
                    yield fail(exc)
            return gen

        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            try:
                return fn(*args, **kw)
            except Exception as exc:  # noqa: BLE001 - shown as one line in the page
                return fail(exc)
        return wrapper
    return deco


# The heavy work, at module level and without a state argument: on ZeroGPU it runs under ``spaces.GPU``
# in a worker process, where arguments and results must pickle (:mod:`lorahub.space.gpu`).
#: Longest a render or a blend may hold a ZeroGPU slice (seconds).
RENDER_GPU_S = 120
#: Longest a training run may hold one.
TRAIN_GPU_S = 600


def render_job(*args: Any, **kw: Any) -> cb.Generated:
    """:func:`callbacks.generate` on the process-wide state."""
    return cb.generate(cb.get_state(), *args, **kw)


def bake_job(*args: Any, **kw: Any) -> Any:
    """:func:`callbacks.bake_blend` on the process-wide state."""
    return cb.bake_blend(cb.get_state(), *args, **kw)


def train_job(*args: Any, **kw: Any) -> Any:
    """:func:`callbacks.train` on the process-wide state (a generator of events)."""
    yield from cb.train(cb.get_state(), *args, **kw)


def _client(request: Any) -> str:
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


def create_blocks(base: str | None = None, *, search: cb.Searcher | None = None, uses: cb.Uses | None = None,
                  policy: guard.UiPolicy | None = None, hub_endpoints: tuple[str, ...] = ()) -> Any:
    """The whole page as a ``gr.Blocks``; serve it with :func:`mount` or :func:`serve` (never ``.launch()``:
    the guard's settings are applied there).

    ``search``: the host's catalogue search (``Registry.search``; the page opens no registry itself:
    ``lorahub serve --ui`` passes its own registry's, ``lorahub space`` and an exported Space's ``app.py``
    the one they opened, see :mod:`lorahub.cli.spacehost`). ``uses``: the host's ``Registry.uses`` (a picked
    result names the blends made from it). ``hub_endpoints``: the Hub endpoints whose
    results may be previewed (downloaded on the first preview). ``policy``: the guard's rules (default:
    :func:`guard.make_policy` from the environment).
    """
    policy = policy or guard.make_policy()
    guard.install(policy)  # Gradio's upload cache into the private folder, before any component exists
    import gradio as gr

    state = cb.get_state(base, searcher=search, uses=uses, workdir=policy.work_dir, hub_endpoints=hub_endpoints,
                         max_download=policy.max_file_size)
    render = on_gpu(render_job, duration=RENDER_GPU_S)
    bake = on_gpu(bake_job, duration=RENDER_GPU_S)
    training = on_gpu(train_job, duration=TRAIN_GPU_S)
    n = cb.MAX_ADAPTERS
    limit = policy.limiter.check
    defaults = cb.page_defaults(state.base)

    with gr.Blocks(title="lorahub") as demo:
        gr.Markdown(INTRO.format(base=state.base))
        # which base previews and training use (SD 1.x, SDXL, Flux.1, SD 3.5; on a CPU the embedded tiny models)
        family = gr.Radio([(label, key) for key, label in cb.FAMILIES.items()], value="sd1",
                          label="Base model family",
                          info="; ".join(f"{cb.FAMILIES[k]}: {state.bases[k]}" for k in cb.FAMILIES if k != "sd1"),
                          elem_id="base-family")
        chosen = gr.State([])
        results = gr.State([])
        package = gr.State(None)

        # ------------------------------------------------------------ Search
        with gr.Tab("Search", id="search"):
            with gr.Row():
                query = gr.Textbox(label="Search", placeholder="name, trigger word, tag, or what it looks like...", elem_id="search-query", scale=3)
                base_f = gr.Textbox(label="Base family", placeholder="sd1, sdxl, pony...", elem_id="search-base")
                fmt_f = gr.Textbox(label="Format", placeholder="kohya-lora, diffusers...", elem_id="search-format")
                tags_f = gr.Textbox(label="Tags", placeholder="comma separated", elem_id="search-tags")
            search_btn = gr.Button("Search", variant="primary", elem_id="search-btn")
            gallery = gr.Gallery(label="Adapters (click one to add it to the preview)", columns=4, height=620,
                                 allow_preview=False, object_fit="contain", elem_id="search-gallery")
            table = gr.Dataframe(headers=cb.RESULT_COLUMNS, value=[], interactive=False, wrap=True,
                                 elem_id="search-results", label="Results (click a row to add it to the preview)")
            search_status = gr.Markdown("", elem_id="search-status")

        # ------------------------------------------------------------ Preview
        with gr.Tab("Preview & blend", id="preview"):
            chosen_md = gr.Markdown("No adapters chosen yet: pick them in Search or upload one here.",
                                    elem_id="preview-chosen")
            sliders = []
            with gr.Row():
                for i in range(n):
                    sliders.append(gr.Slider(-1.0, 2.0, value=1.0, step=0.05, label=f"adapter {i + 1}",
                                             visible=False, elem_id=f"weight-{i}"))
            with gr.Row():
                upload_adapter = gr.File(label="Add an adapter file (.safetensors)", type="filepath",
                                         elem_id="preview-upload")
                with gr.Column():
                    remove_name = gr.Dropdown(choices=[], label="Remove adapter", elem_id="preview-remove-name")
                    remove_btn = gr.Button("Remove", elem_id="preview-remove")
            prompt = gr.Textbox(label="Prompt", value=defaults["prompt"], elem_id="prompt")
            negative = gr.Textbox(label="Negative prompt", value="", elem_id="negative")
            with gr.Row():
                seed = gr.Number(label="Seed", value=0, precision=0, elem_id="seed")
                steps = gr.Slider(1, 50, value=cb.PREVIEW_STEPS, step=1, label="Steps", elem_id="steps")
                grid = gr.Checkbox(label="Grid across weights", value=False, elem_id="grid")
                grid_weights = gr.Textbox(label="Grid weights", value="0, 0.5, 1", elem_id="grid-weights")
            with gr.Row():
                gen_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                blend_method = gr.Dropdown(["linear", "cat", "svd", "ties", "dare"], value="linear",
                                           label="Blend method", elem_id="blend-method")
                bake_btn = gr.Button("Bake blend", elem_id="bake")
            image = gr.Image(label="Image", type="pil", format="png", elem_id="preview-image", interactive=False,
                             height=512)
            info = gr.Textbox(label="Parameters", interactive=False, lines=3, elem_id="preview-info")
            blend_file = gr.File(label="Blended adapter", interactive=False, elem_id="blend-file")
            preview_status = gr.Markdown("", elem_id="preview-status")
            with gr.Accordion("Blend search: find the weights from example images", open=False,
                              elem_id="search-blend"):
                gr.Markdown(f"Upload up to {cb.MAX_SEARCH_IMAGES} target images (with `.txt` captions of the same "
                            "name, or write a prompt below): the search finds the weights at which the chosen "
                            "adapters reproduce them best (the base's denoising loss, plus L1 on the weights, "
                            "which drops adapters that do not help).")
                search_files = gr.File(label="Target images (+ .txt captions)", file_count="multiple",
                                       type="filepath", elem_id="search-files")
                with gr.Row():
                    search_prompt = gr.Textbox(label="Prompt (for images without a caption)", value="",
                                               elem_id="search-prompt", scale=3)
                    search_budget = gr.Number(label=f"Budget (evaluations, at most {cb.MAX_SEARCH_BUDGET})", value=60,
                                              precision=0, elem_id="search-budget")
                    search_l1 = gr.Number(label="L1", value=0.002, elem_id="search-l1")
                search_btn_b = gr.Button("Search weights", elem_id="search-weights")
                search_grid = gr.Image(label="Targets, found blend, base alone", type="pil", format="png",
                                       interactive=False, elem_id="search-grid")
                search_summary = gr.Markdown("", elem_id="search-summary")
                search_recipe = gr.Code(label="Recipe (lorahub blend --recipe)", language="yaml",
                                        elem_id="search-recipe")
                search_recipe_file = gr.File(label="Recipe file", interactive=False, elem_id="search-recipe-file")
                search_blend_status = gr.Markdown("", elem_id="search-blend-status")

        # ------------------------------------------------------------ Inspect
        with gr.Tab("Inspect", id="inspect"):
            inspect_file = gr.File(label="Adapter file (.safetensors; pickles are refused unread)", type="filepath",
                                   elem_id="inspect-upload")
            inspect_md = gr.Markdown("", elem_id="inspect-report")
            with gr.Accordion("Full report (JSON)", open=False):
                inspect_json = gr.JSON(elem_id="inspect-json")
            inspect_status = gr.Markdown("", elem_id="inspect-status")

        # ------------------------------------------------------------ Train
        with gr.Tab("Train", id="train"):
            gr.Markdown("Trains a LoRA on the base family picked above, at its native size: SD 1.x and SDXL by "
                        "denoising, Flux.1 and SD 3.5 by flow matching (the transformer; diffusers and "
                        "ComfyUI/kohya files in the package).")
            train_files = gr.File(label="Images with .txt captions of the same name, or a zip", file_count="multiple",
                                  type="filepath", elem_id="train-files")
            with gr.Row():
                trigger = gr.Textbox(label="Trigger word", value="", elem_id="train-trigger")
                train_steps = gr.Number(label="Steps", value=defaults["train_steps"], precision=0, elem_id="train-steps")
                train_rank = gr.Number(label="Rank", value=4, precision=0, elem_id="train-rank")
                sample_every = gr.Number(label="Sample every N steps (0: at the end)", value=0, precision=0,
                                         elem_id="train-sample-every")
            train_btn = gr.Button("Train", variant="primary", elem_id="train-btn")
            train_progress = gr.Markdown("", elem_id="train-progress")
            samples = gr.Gallery(label="Samples", columns=4, height=260, object_fit="contain", elem_id="train-samples")
            train_zip = gr.File(label="Adapter package (zip)", interactive=False, elem_id="train-zip")
            train_status = gr.Markdown("", elem_id="train-status")

        # ------------------------------------------------------------ Push
        with gr.Tab("Push", id="push"):
            gr.Markdown("Pushes the adapter package trained in this session, or a file uploaded here. "
                        "A push needs your token for the endpoint: it is used for this push only, never "
                        "stored or logged, and the server never pushes with credentials of its own.")
            push_file = gr.File(label="Adapter file (optional: else the package trained above)", type="filepath",
                                elem_id="push-upload")
            with gr.Row():
                token = gr.Textbox(label="Token", type="password", elem_id="push-token")
                repo = gr.Textbox(label="Repo (user/name)", elem_id="push-repo")
                # the allowed endpoints; any other value is refused by the handler, in one line
                endpoint = gr.Dropdown(choices=list(policy.push_endpoints), value=policy.push_endpoints[0],
                                       allow_custom_value=True, label="Endpoint", elem_id="push-endpoint")
                private = gr.Checkbox(label="Private", value=False, elem_id="push-private")
            with gr.Row():
                dry_btn = gr.Button("Show card (dry run)", elem_id="push-dry")
                push_btn = gr.Button("Push", variant="primary", elem_id="push-btn")
            card = gr.Code(label="Model card", language="markdown", elem_id="push-card")
            push_url = gr.Markdown("", elem_id="push-url")
            push_status = gr.Markdown("", elem_id="push-status")

        # ------------------------------------------------------------ handlers

        def chosen_view(ch: list[dict[str, Any]]) -> list[Any]:
            ups = []
            for i in range(n):
                if i < len(ch):
                    ups.append(gr.update(visible=True, label=f"{ch[i]['name']} weight", value=ch[i].get("weight", 1.0)))
                else:
                    ups.append(gr.update(visible=False))
            text = ("Chosen: " + ", ".join(f"`{c['name']}`" for c in ch)) if ch else "No adapters chosen yet."
            return [ch, text, gr.update(choices=[c["name"] for c in ch], value=None), *ups]

        chosen_outputs = [chosen, chosen_md, remove_name, *sliders]

        @_guard(4)
        def do_search(q: str, b: str, f: str, t: str) -> Any:
            rows, res = cb.search(state, q, b, f, t)
            status = f"{len(rows)} result{'s' if len(rows) != 1 else ''}"
            pics = [cb.card_sample(state, r) for r in res]
            yield cb.gallery_items(res, pics), rows, res, status
            # then the cards without a sample image, with a preview rendered for them (once: cached)
            rendered = dict(cb.fill_card_samples(state, res, pics))
            if rendered:
                pics = [rendered.get(i, p) for i, p in enumerate(pics)]
                yield cb.gallery_items(res, pics), gr.skip(), gr.skip(), status

        search_outputs = [gallery, table, results, search_status]
        # one search at a time, in order: a search typed while the page's first one runs lands after it
        # (searches take milliseconds)
        in_order = dict(concurrency_limit=1, concurrency_id="search")
        search_btn.click(do_search, [query, base_f, fmt_f, tags_f], search_outputs, **in_order)
        query.submit(do_search, [query, base_f, fmt_f, tags_f], search_outputs, **in_order)
        # the page opens on the catalogue: the first results without typing anything
        demo.load(do_search, [query, base_f, fmt_f, tags_f], search_outputs, **in_order)

        @_guard(len(chosen_outputs) + 1)
        def do_select(request: gr.Request, res: list[dict[str, Any]], ch: list[dict[str, Any]], evt: gr.SelectData) -> Any:
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            picked = res[int(row)]
            if picked.get("source_kind") == "hub":  # a download on its first preview: counted like an upload
                limit("inspect", _client(request))
            blends = cb.used_in(state, picked)
            made = (" — blends made from it: " + ", ".join(f"`{cb._md_escape(b)}`" for b in blends)) if blends else ""
            new = cb.add_result(ch, picked, state)
            return (*chosen_view(new), f"added `{picked['name']}` to the preview ({len(new)} chosen){made}")

        table.select(do_select, [results, chosen], [*chosen_outputs, search_status])
        gallery.select(do_select, [results, chosen], [*chosen_outputs, search_status])

        def weights_of(ch: list[dict[str, Any]], values: tuple[Any, ...]) -> list[float]:
            return [float(values[i]) for i in range(len(ch))]

        @_guard(len(chosen_outputs) + 1)
        def do_upload(request: gr.Request, path: str | None, ch: list[dict[str, Any]], *values: Any) -> Any:
            if not path:
                return (*[gr.skip()] * len(chosen_outputs), "")
            upload = policy.uploaded(path)
            limit("inspect", _client(request))
            ch = [dict(c, weight=float(values[i])) for i, c in enumerate(ch)]
            new = cb.add_file(ch, upload)
            return (*chosen_view(new), f"added `{new[-1]['name']}`")

        upload_adapter.upload(do_upload, [upload_adapter, chosen, *sliders], [*chosen_outputs, preview_status])

        @_guard(len(chosen_outputs) + 1)
        def do_remove(name: str | None, ch: list[dict[str, Any]], *values: Any) -> Any:
            if not name:
                return (*[gr.skip()] * len(chosen_outputs), "choose the adapter to remove")
            ch = [dict(c, weight=float(values[i])) for i, c in enumerate(ch)]
            return (*chosen_view(cb.remove_adapter(ch, name)), f"removed `{name}`")

        remove_btn.click(do_remove, [remove_name, chosen, *sliders], [*chosen_outputs, preview_status])

        @_guard(3)
        def do_generate(request: gr.Request, ch: list[dict[str, Any]], p: str, neg: str, s: Any, st: Any,
                        g: bool, gw: str, fam: str, *values: Any, progress: gr.Progress = gr.Progress()) -> Any:  # noqa: B008
            limit("render", _client(request))
            progress(0, desc="rendering" if state.loaded(fam) else "loading the base model")
            out = render(ch, weights_of(ch, values), p, neg, int(s or 0), int(st), grid=g, grid_weights=gw, family=fam)
            return out.image, out.infotext, out.status

        gen_btn.click(do_generate, [chosen, prompt, negative, seed, steps, grid, grid_weights, family, *sliders],
                      [image, info, preview_status], concurrency_limit=1, concurrency_id="pipeline")

        @_guard(2)
        def do_bake(request: gr.Request, ch: list[dict[str, Any]], method: str, *values: Any) -> Any:
            limit("bake", _client(request))
            started = time.perf_counter()
            path = bake(ch, weights_of(ch, values), method)
            return str(path), f"baked `{path.name}` in {cb.elapsed(started)}"

        bake_btn.click(do_bake, [chosen, blend_method, *sliders], [blend_file, preview_status],
                       concurrency_limit=1, concurrency_id="pipeline")

        @_guard(len(chosen_outputs) + 5)
        def do_search_blend(request: gr.Request, ch: list[dict[str, Any]], files: list[str] | None, p: str, b: Any,
                            lam: Any, s: Any, fam: str, progress: gr.Progress = gr.Progress()) -> Any:  # noqa: B008
            uploads = policy.uploaded_many(files)  # only this page's uploads, before anything is opened
            limit("search", _client(request))
            progress(0, desc="searching" if state.loaded(fam) else "loading the base model")
            out = cb.blend_search(state, ch, uploads, p, int(b or 0), float(lam or 0.0), int(s or 0), family=fam,
                                  on_progress=lambda i, n, best: progress((min(i, n), n), desc=f"best {best:.5f}"))
            new = [dict(c, weight=float(out.weights.get(c["name"], 0.0))) for c in ch]
            return (*chosen_view(new), out.grid, out.summary, out.recipe_yaml, str(out.recipe_path), "")

        search_btn_b.click(do_search_blend,
                           [chosen, search_files, search_prompt, search_budget, search_l1, seed, family],
                           [*chosen_outputs, search_grid, search_summary, search_recipe, search_recipe_file,
                            search_blend_status], concurrency_limit=1, concurrency_id="pipeline")

        @_guard(3)
        def do_inspect(request: gr.Request, path: str | None) -> Any:
            if not path:
                return "", None, ""
            upload = policy.uploaded(path)
            limit("inspect", _client(request))
            rep = cb.inspect(upload)
            return cb.inspect_markdown(rep, upload.name), rep, ""

        inspect_file.upload(do_inspect, [inspect_file], [inspect_md, inspect_json, inspect_status])

        @_guard(5)
        def do_train(request: gr.Request, files: list[str] | None, trig: str, st: Any, rk: Any, every: Any, fam: str,
                     progress: gr.Progress = gr.Progress()) -> Any:  # noqa: B008
            uploads = policy.uploaded_many(files)
            limit("train", _client(request))
            yield "**preparing**: loading the base model and the images", [], None, None, ""
            for ev in training([str(u) for u in uploads], trig, int(st or 0), int(rk or 0),
                               sample_every=int(every or 0), family=fam):
                progress((ev.step, ev.steps), desc=f"loss {ev.loss:.4f}" if ev.loss is not None else "training")
                if ev.done:
                    yield cb.loss_text(ev), ev.samples, ev.zip_path, ev.zip_path, ""
                else:
                    yield cb.loss_text(ev), ev.samples, gr.skip(), gr.skip(), ""

        train_btn.click(do_train, [train_files, trigger, train_steps, train_rank, sample_every, family],
                        [train_progress, samples, train_zip, package, train_status],
                        concurrency_limit=1, concurrency_id="train")

        def run_push(request: Any, upload: str | None, pkg: str | None, tok: str, rp: str, ep: str, priv: bool,
                     dry: bool) -> Any:
            source = policy.uploaded(upload) if upload else pkg  # the package: trained here, in the work folder
            allowed = policy.endpoint(ep)  # before any request
            limit("push", _client(request))
            started = time.perf_counter()
            scratch = state.new_dir("push")  # an uploaded zip is unpacked in here; removed right after
            try:
                res = cb.push(source, repo=rp, token=tok, private=priv, endpoint=allowed, dry_run=dry, workdir=scratch)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            if dry:
                url = f"Dry run: would push to [{res['repo_id']}]({res['url']})"
            else:
                url = (f"Pushed: [{res['url']}]({res['url']})" if res["changed"]
                       else f"Nothing changed: [{res['url']}]({res['url']})")
            return res["card"], url, f"done in {cb.elapsed(started)}" + "".join(f"\n- warning: {w}" for w in res["warnings"])

        @_guard(3)
        def do_dry(request: gr.Request, upload: str | None, pkg: str | None, tok: str, rp: str, ep: str,
                   priv: bool) -> Any:
            return run_push(request, upload, pkg, tok, rp, ep, priv, True)

        @_guard(3)
        def do_push(request: gr.Request, upload: str | None, pkg: str | None, tok: str, rp: str, ep: str,
                    priv: bool) -> Any:
            return run_push(request, upload, pkg, tok, rp, ep, priv, False)

        push_inputs = [push_file, package, token, repo, endpoint, private]
        dry_btn.click(do_dry, push_inputs, [card, push_url, push_status], concurrency_limit=1,
                      concurrency_id="push")
        push_btn.click(do_push, push_inputs, [card, push_url, push_status], concurrency_limit=1,
                       concurrency_id="push")

    demo.queue(default_concurrency_limit=2, max_size=guard.QUEUE_MAX_SIZE)
    demo.lorahub_policy = policy
    return demo


def mount(app: Any, path: str = "/", *, blocks: Any = None, base: str | None = None,
          search: cb.Searcher | None = None, uses: cb.Uses | None = None,
          policy: guard.UiPolicy | None = None) -> Any:
    """Mount the page (``blocks``, else :func:`create_blocks` of the other arguments) inside a FastAPI
    ``app`` at ``path``, hardened; returns the app.

    Gradio checks the files a call names only for a launched Blocks, and a mounted one never launches: it is
    marked launched here, so that Gradio itself takes only files of its upload folder (the guard's). The
    guard's blocked paths, upload cap and no run history (whose bucket feature would use the host's own
    Hugging Face login) are set, and :class:`~lorahub.space.guard.UiGate` is put in front of the page.
    Mount it after the API routes: Starlette tries routes in order, so ``/api/...`` stays the server's.
    """
    import gradio as gr
    from starlette.routing import Mount

    demo = blocks if blocks is not None else create_blocks(base, search=search, uses=uses, policy=policy)
    pol: guard.UiPolicy = demo.lorahub_policy
    before = list(app.router.routes)
    gr.mount_gradio_app(app, demo, path=path, allowed_paths=[], blocked_paths=pol.gradio_blocked_paths(),
                        max_file_size=pol.max_file_size, show_error=False, run_history=False, mcp_server=False,
                        ssr_mode=False, footer_links=["gradio"], css=CSS)
    demo.has_launched = True  # see above: Gradio's own file checks apply to launched Blocks only
    mounts = [r for r in app.router.routes if r not in before and isinstance(r, Mount)]
    if len(mounts) != 1:  # pragma: no cover - Gradio changed how it mounts
        raise UsageError("cannot put the web UI's gate in front of Gradio: refusing to serve the page unguarded")

    def stream_exists(session_hash: str | None, event_id: str | None) -> bool:
        # how Gradio's queue/data and call/<name>/<event id> find their messages (gradio.routes)
        queue = demo._queue
        if event_id is not None:
            event = queue.event_ids_to_events.get(event_id)
            session_hash = event.session_hash if event is not None else next(
                (s for s, ids in queue.pending_event_ids_session.items() if event_id in ids), event_id)
        return session_hash in queue.pending_messages_per_session

    api_info: dict[str, Any] = {}

    def api_params(name: str) -> list[dict[str, Any]] | None:
        # what Gradio's call/v2 route builds the call from (gradio.routes: get_api_info's named endpoints)
        if not api_info:
            api_info.update(demo.get_api_info()["named_endpoints"])
        endpoint = api_info.get("/" + name)
        return None if endpoint is None else list(endpoint.get("parameters", []))

    mounts[0].app = guard.UiGate(mounts[0].app, pol, fn_indices=lambda: demo.fns,
                                 api_names=lambda: {fn.api_name for fn in demo.fns.values() if fn.api_name},
                                 stream_exists=stream_exists, api_params=api_params)
    return app


def serve(host: str = "127.0.0.1", port: int = 7860, *, blocks: Any = None, base: str | None = None,
          search: cb.Searcher | None = None, policy: guard.UiPolicy | None = None,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the page alone (``lorahub space``, the Hugging Face Space) until interrupted: the same
    hardened mount as inside ``lorahub serve``, in its own FastAPI app under uvicorn."""
    import socket

    import uvicorn
    from fastapi import FastAPI

    demo = blocks if blocks is not None else create_blocks(base, search=search, policy=policy)
    app = mount(FastAPI(docs_url=None, redoc_url=None, openapi_url=None), "/", blocks=demo)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(256)
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, timeout_keep_alive=30)
    if on_ready:
        on_ready(f"http://{'[' + host + ']' if ':' in host else host}:{sock.getsockname()[1]}/")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()

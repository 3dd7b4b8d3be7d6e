"""The demo's layout: every component, placed, with no behaviour (see :mod:`app.callbacks`).

:func:`build_layout` must run inside a ``gr.Blocks`` context; it returns a :class:`UI` whose
attributes are the components the callbacks read and write. Element ids (``rgct-*``) are
stable: the browser test and the page's own script find components by them.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app import viewer
from app.handlers import DemoApp
from app.inputs import FILM_SUFFIXES, MASK_SUFFIXES, VOLUME_SUFFIXES
from app.results import SENTENCE_JS
from app.session import MAX_NEW_TOKENS_RANGE, NUM_BEAMS_RANGE
from rgct.constants import QUESTION_TEMPLATES

INSTRUCTIONS = """
# rgct: region-grounded chest CT reports
**1. Scan**: pick an example phantom, or upload a CT (`.nii`, `.nii.gz`, a DICOM series as
`.zip`, one multi-frame DICOM `.dcm`, or a RAD-ChestCT `.npz`). **2. Region**: the regions come
with the example or are predicted; upload masks, or draw a box. **3. Text**: write the region's
report or the full report (**click a sentence** to see its finding or region; click a region in
the viewer to list its sentences), or talk with the scan in the chat. Mouse wheel over the image
scrolls slices. Research demo: not for clinical use.
"""

EMPTY_REPORT = "<i>Write the full report to see its sentences here.</i>"

SCOPES = ("selected region", "whole scan")
"""What a chat question is about: the selected region's mask, or the whole scan."""

CLICK_MODES = ("inspect", "draw box")

CUSTOM_WINDOW = "custom"


@dataclass
class UI:
    """The components of the demo page (see :func:`build_layout`)."""

    state: gr.State
    example_dd: gr.Dropdown
    example_btn: gr.Button
    volume_file: gr.File
    region_dd: gr.Dropdown
    mask_file: gr.File
    z0: gr.Slider
    z1: gr.Slider
    top: gr.Slider
    bottom: gr.Slider
    left: gr.Slider
    right: gr.Slider
    box_btn: gr.Button
    status: gr.Markdown
    warnings: gr.HTML
    image: gr.Image
    slice_slider: gr.Slider
    view: gr.Radio
    click_mode: gr.Radio
    window: gr.Radio
    level: gr.Slider
    width: gr.Slider
    zoom: gr.Slider
    region_sentences: gr.HTML
    evidence_btn: gr.Button
    evidence: gr.HTML
    rr_btn: gr.Button
    rr_out: gr.HTML
    fr_btn: gr.Button
    fr_html: gr.HTML
    json_dl: gr.DownloadButton
    txt_dl: gr.DownloadButton
    html_dl: gr.DownloadButton
    chatbot: gr.Chatbot
    scope: gr.Radio
    template: gr.Dropdown
    abnormality: gr.Textbox
    question: gr.Textbox
    ask_btn: gr.Button
    clear_chat: gr.Button
    max_new: gr.Slider
    decoding: gr.Radio
    beams: gr.Slider
    latency: gr.Markdown

    @property
    def box_sliders(self) -> list[gr.Slider]:
        return [self.z0, self.z1, self.top, self.bottom, self.left, self.right]

    @property
    def gen_inputs(self) -> list[gr.components.Component]:
        return [self.max_new, self.decoding, self.beams]

    @property
    def view_inputs(self) -> list[gr.components.Component]:
        """What a frame depends on besides the session."""
        return [self.view, self.level, self.width, self.zoom]


def chat_controls(
    label: str, scopes: tuple[str, ...], templates: list[str], slot: tuple[str, str, str]
) -> tuple[gr.Chatbot, gr.Radio, gr.Dropdown, gr.Textbox, gr.Textbox, gr.Button, gr.Button]:
    """The chat's components (both pages): chatbot, scope, template, the template's slot
    (``slot``: the template chosen first, the slot's label and value), question, ask, clear."""
    chatbot = gr.Chatbot(label=label, height=320, elem_id="rgct-chat")
    scope = gr.Radio(list(scopes), value=scopes[0], label="Ask about", elem_id="rgct-scope")
    with gr.Row():
        template = gr.Dropdown(templates, value=slot[0], label="Question template")
        filler = gr.Textbox(label=slot[1], value=slot[2])
    question = gr.Textbox(label="Question (edit freely)", lines=2, elem_id="rgct-question")
    with gr.Row():
        ask_btn = gr.Button("Ask", variant="primary", elem_id="rgct-ask")
        clear_chat = gr.Button("New conversation", elem_id="rgct-clear-chat")
    return chatbot, scope, template, filler, question, ask_btn, clear_chat


def generation_settings() -> tuple[gr.Slider, gr.Radio, gr.Slider, gr.Markdown]:
    """The generation settings accordion and the latency line under it (both pages)."""
    with gr.Accordion("Generation settings", open=False, elem_id="rgct-settings"):
        max_new = gr.Slider(
            *MAX_NEW_TOKENS_RANGE, value=64, step=1, label="Max new tokens", elem_id="rgct-max-new"
        )
        decoding = gr.Radio(["greedy", "beam search"], value="greedy", label="Decoding")
        beams = gr.Slider(*NUM_BEAMS_RANGE, value=3, step=1, label="Beams (beam search)")
    latency = gr.Markdown("", elem_id="rgct-latency")
    return max_new, decoding, beams, latency


def _sentence_html(elem_id: str, value: str = "") -> gr.HTML:
    return gr.HTML(value, elem_id=elem_id, js_on_load=SENTENCE_JS, elem_classes=["rgct-clickable"])


def build_layout(app: DemoApp) -> UI:
    """Place every component of the page; call inside ``gr.Blocks``."""

    def forget(session: object) -> None:
        """gradio dropped a closed session's state: unregister and free it. (A closure, not the
        bound method ``app.discard``: gradio deep-copies components, and copying a bound method
        copies its object, here the whole model.)"""
        app.discard(session)

    state = gr.State(None, delete_callback=forget)
    gr.Markdown(INSTRUCTIONS)
    lung_level, lung_width = viewer.level_from_window(viewer.WINDOW_PRESETS["lung"])
    with gr.Row(equal_height=False):
        # --- left: scan and region ---------------------------------------------------------------
        with gr.Column(scale=3, min_width=280):
            gr.Markdown("### 1. Scan")
            with gr.Tab("Examples"):
                example_dd = gr.Dropdown(
                    app.examples,
                    value=app.examples[0] if app.examples else None,
                    label="Example phantom",
                    elem_id="rgct-example",
                )
                example_btn = gr.Button(
                    "Load example", variant="primary", elem_id="rgct-load-example"
                )
            with gr.Tab("Upload"):
                volume_file = gr.File(
                    label="CT scan: .nii / .nii.gz / DICOM .zip or .dcm / RAD-ChestCT .npz",
                    # radiographs are accepted so that they are told apart, not silently refused
                    file_types=[*VOLUME_SUFFIXES, *FILM_SUFFIXES],
                    type="filepath",
                    elem_id="rgct-volume-file",
                )
            gr.Markdown("### 2. Region")
            region_dd = gr.Dropdown(
                [], label="Region in use", interactive=True, elem_id="rgct-region"
            )
            with gr.Accordion("Upload masks", open=False):
                mask_file = gr.File(
                    label="Binary mask .nii(.gz), or .zip of <region>.nii.gz",
                    file_types=list(MASK_SUFFIXES),
                    type="filepath",
                    elem_id="rgct-mask-file",
                )
            with gr.Accordion("Draw a box", open=False, elem_id="rgct-box-tool"):
                gr.Markdown(
                    "Set *Click* to **draw box**, then click two opposite corners on the "
                    "**axial** image (or use the sliders). Rows count from the image's top "
                    "(anterior), columns from its left (the patient's right). The slice range "
                    "starts at the slice you drew on."
                )
                z0 = gr.Slider(0, 1, value=0, step=1, label="First slice", elem_id="rgct-z0")
                z1 = gr.Slider(0, 1, value=0, step=1, label="Last slice", elem_id="rgct-z1")
                top = gr.Slider(0, 1, value=0, step=1, label="Top row", elem_id="rgct-top")
                bottom = gr.Slider(0, 1, value=0, step=1, label="Bottom row", elem_id="rgct-bottom")
                left = gr.Slider(0, 1, value=0, step=1, label="Left column", elem_id="rgct-left")
                right = gr.Slider(0, 1, value=0, step=1, label="Right column", elem_id="rgct-right")
                box_btn = gr.Button("Use box as region", elem_id="rgct-box-btn")
            status = gr.Markdown("Load a scan to begin.", elem_id="rgct-status")
            warnings = gr.HTML("", elem_id="rgct-warnings")

        # --- middle: viewer ------------------------------------------------------------------------
        with gr.Column(scale=5, min_width=360):
            image = gr.Image(
                label="Viewer",
                type="numpy",
                interactive=False,
                height=520,
                buttons=["download", "fullscreen"],
                elem_id="rgct-viewer",
            )
            slice_slider = gr.Slider(0, 1, value=0, step=1, label="Slice", elem_id="rgct-slice")
            with gr.Row():
                view = gr.Radio(
                    list(viewer.VIEWS), value="axial", label="Plane", elem_id="rgct-plane"
                )
                click_mode = gr.Radio(
                    list(CLICK_MODES), value="inspect", label="Click", elem_id="rgct-click-mode"
                )
            with gr.Row():
                window = gr.Radio(
                    [*viewer.WINDOW_PRESETS, CUSTOM_WINDOW],
                    value="lung",
                    label="HU window",
                    elem_id="rgct-window",
                )
                zoom = gr.Slider(
                    *viewer.ZOOM_RANGE, value=1.0, step=0.5, label="Zoom", elem_id="rgct-zoom"
                )
            with gr.Row():
                level = gr.Slider(
                    -1200, 1500, value=lung_level, step=10, label="Level (HU)", elem_id="rgct-level"
                )
                width = gr.Slider(
                    10, 4000, value=lung_width, step=10, label="Width (HU)", elem_id="rgct-width"
                )
            region_sentences = _sentence_html("rgct-region-sentences")
            with gr.Row():
                evidence_btn = gr.Button(
                    "Evidence for this region", size="sm", elem_id="rgct-evidence-btn"
                )
            evidence = gr.HTML("", elem_id="rgct-evidence")

        # --- right: text ---------------------------------------------------------------------------
        with gr.Column(scale=4, min_width=320):
            gr.Markdown("### 3. Text")
            with gr.Tab("Region report"):
                rr_btn = gr.Button("Write region report", variant="primary", elem_id="rgct-rr-btn")
                rr_out = _sentence_html("rgct-rr-out")
            with gr.Tab("Full report", elem_id="rgct-tab-report"):
                fr_btn = gr.Button("Write full report", variant="primary", elem_id="rgct-fr-btn")
                fr_html = _sentence_html("rgct-report", EMPTY_REPORT)
                with gr.Row():
                    json_dl = gr.DownloadButton(
                        "Report .json", visible=False, size="sm", elem_id="rgct-json-dl"
                    )
                    txt_dl = gr.DownloadButton(
                        "Report .txt", visible=False, size="sm", elem_id="rgct-txt-dl"
                    )
                    html_dl = gr.DownloadButton(
                        "Report .html", visible=False, size="sm", elem_id="rgct-html-dl"
                    )
            with gr.Tab("Chat", elem_id="rgct-tab-chat"):
                gr.Markdown(
                    "Follow-ups keep the region and finding in focus (*where is it?*, *how big "
                    "is it?*, *and the left lung?*); each is asked as a question the model was "
                    "trained on, shown under its answer with the region whose mask it used (the "
                    "viewer shows it). An unclear *it* is asked back, not guessed."
                )
                chatbot, scope, template, abnormality, question, ask_btn, clear_chat = (
                    chat_controls(
                        "Conversation with this scan",
                        SCOPES,
                        list(QUESTION_TEMPLATES),
                        ("abnormality", "{abnormality}", "nodule"),
                    )
                )
            max_new, decoding, beams, latency = generation_settings()
    return UI(**{k: v for k, v in locals().items() if k in UI.__dataclass_fields__})

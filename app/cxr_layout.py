"""The radiograph mode's layout: every component, placed, with no behaviour (see
:mod:`app.cxr_callbacks`).

Three columns as the CT page: the film and its box (left), the viewer (middle), the text
(right: the answer for the box, the findings report, the chat). Element ids (``rgct-*``) are
stable; the viewer, status, warnings, report, chat and settings share the CT page's ids, so the
page's styles apply unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.cxr_handlers import WHOLE_IMAGE, CxrDemoApp
from app.cxr_inputs import CT_SUFFIXES, FILM_SUFFIXES
from app.cxr_results import EMPTY_REPORT
from app.layout import chat_controls, generation_settings
from app.results import SENTENCE_JS
from rgct.constants import CXR_PROMPTS

INSTRUCTIONS = """
# rgct: region-grounded chest radiograph findings
**1. Film**: pick an example phantom film, or upload a frontal chest radiograph (DICOM
`.dcm`/`.dicom` or `.png`).
**2. Box**: click two opposite corners on the film, or type the box in pixels (x to the right,
y down, from the top-left corner). **3. Text**: ask what is in the box, write the findings
report (**click a sentence** to see its zone and where the model found it), or ask free
questions about the film or the box. Research demo: not for clinical use.
"""

SCOPES = (WHOLE_IMAGE, "given box")
"""What a chat question is about: the whole film, or the box drawn on it."""

TEMPLATES = {k.removeprefix("cxr_"): v for k, v in CXR_PROMPTS.items() if k != "cxr_box"}
"""Question templates of the chat ({finding} filled from the finding box)."""


@dataclass
class CxrUI:
    """The components of the radiograph page (see :func:`build_cxr_layout`)."""

    state: gr.State
    example_dd: gr.Dropdown
    example_btn: gr.Button
    film_file: gr.File
    x_min: gr.Number
    y_min: gr.Number
    x_max: gr.Number
    y_max: gr.Number
    box_btn: gr.Button
    clear_box_btn: gr.Button
    status: gr.Markdown
    warnings: gr.HTML
    image: gr.Image
    box_ask_btn: gr.Button
    box_out: gr.HTML
    fr_btn: gr.Button
    fr_html: gr.HTML
    chatbot: gr.Chatbot
    scope: gr.Radio
    template: gr.Dropdown
    finding: gr.Textbox
    question: gr.Textbox
    ask_btn: gr.Button
    clear_chat: gr.Button
    max_new: gr.Slider
    decoding: gr.Radio
    beams: gr.Slider
    latency: gr.Markdown

    @property
    def box_inputs(self) -> list[gr.Number]:
        return [self.x_min, self.y_min, self.x_max, self.y_max]

    @property
    def gen_inputs(self) -> list[gr.components.Component]:
        return [self.max_new, self.decoding, self.beams]


def build_cxr_layout(app: CxrDemoApp) -> CxrUI:
    """Place every component of the radiograph page; call inside ``gr.Blocks``."""

    def forget(session: object) -> None:
        """gradio dropped a closed session's state (a closure: see :func:`app.layout`)."""
        app.discard(session)

    state = gr.State(None, delete_callback=forget)
    gr.Markdown(INSTRUCTIONS)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=280):
            gr.Markdown("### 1. Film")
            with gr.Tab("Examples"):
                example_dd = gr.Dropdown(
                    app.examples,
                    value=app.examples[0] if app.examples else None,
                    label="Example phantom film",
                    elem_id="rgct-example",
                )
                example_btn = gr.Button(
                    "Load example", variant="primary", elem_id="rgct-load-example"
                )
            with gr.Tab("Upload"):
                film_file = gr.File(
                    label="Chest radiograph: DICOM .dcm / .dicom or .png",
                    # CT types are accepted so that a CT upload is told apart, not refused unsaid
                    file_types=[*FILM_SUFFIXES, *CT_SUFFIXES],
                    type="filepath",
                    elem_id="rgct-film-file",
                )
            gr.Markdown("### 2. Box (pixels)")
            with gr.Row():
                x_min = gr.Number(label="x_min", precision=0, elem_id="rgct-x-min")
                y_min = gr.Number(label="y_min", precision=0, elem_id="rgct-y-min")
            with gr.Row():
                x_max = gr.Number(label="x_max", precision=0, elem_id="rgct-x-max")
                y_max = gr.Number(label="y_max", precision=0, elem_id="rgct-y-max")
            with gr.Row():
                box_btn = gr.Button("Use box", elem_id="rgct-box-btn")
                clear_box_btn = gr.Button("Clear box", elem_id="rgct-clear-box")
            status = gr.Markdown("Upload a chest radiograph to begin.", elem_id="rgct-status")
            warnings = gr.HTML("", elem_id="rgct-warnings")
        with gr.Column(scale=5, min_width=360):
            image = gr.Image(
                label="Film",
                type="numpy",
                interactive=False,
                height=620,
                buttons=["download", "fullscreen"],
                elem_id="rgct-viewer",
            )
        with gr.Column(scale=4, min_width=320):
            gr.Markdown("### 3. Text")
            with gr.Tab("Box", elem_id="rgct-tab-box"):
                box_ask_btn = gr.Button(
                    "What is in the given box?", variant="primary", elem_id="rgct-box-ask"
                )
                box_out = gr.HTML("", elem_id="rgct-box-out")
            with gr.Tab("Findings report", elem_id="rgct-tab-report"):
                fr_btn = gr.Button(
                    "Write findings report", variant="primary", elem_id="rgct-fr-btn"
                )
                fr_html = gr.HTML(
                    EMPTY_REPORT,
                    elem_id="rgct-report",
                    js_on_load=SENTENCE_JS,
                    elem_classes=["rgct-clickable"],
                )
            with gr.Tab("Chat", elem_id="rgct-tab-chat"):
                chatbot, scope, template, finding, question, ask_btn, clear_chat = chat_controls(
                    "Questions about this film",
                    SCOPES,
                    list(TEMPLATES),
                    ("presence", "{finding}", "pleural effusion"),
                )
            max_new, decoding, beams, latency = generation_settings()
    return CxrUI(**{k: v for k, v in locals().items() if k in CxrUI.__dataclass_fields__})

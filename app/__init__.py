"""The rgct Gradio demo: ``build_demo(predictor) -> gr.Blocks`` and its launcher.

Importing this package does not import gradio; use ``from app.main import build_demo``.
"""

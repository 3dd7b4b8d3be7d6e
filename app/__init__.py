"""The rgct Gradio demo: ``app.demo.build_demo(predictor) -> gr.Blocks`` and ``rgct demo``.

Importing this package does not import gradio; ``app.main`` (the command) imports it only when
the demo is served.
"""

"""Gradio UI: one module per tab; :func:`srweb.ui.app.build_app` assembles them."""

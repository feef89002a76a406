"""The Gradio UI: one module per tab (wiring only), charts, and `app.build_app()`. Imports gradio; the engine
(everything else under curlora/) never does."""

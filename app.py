"""srweb web app (also the Hugging Face Space entry point): `python app.py`."""

from srweb.ui.app import launch

if __name__ == "__main__":
    launch()

"""Where models come from: a local file, an installed package, or the Hugging Face Hub."""

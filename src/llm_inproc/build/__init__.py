"""Building llama.cpp from the sources of the installed llama-cpp-python, with a preset."""

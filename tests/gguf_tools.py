"""Make real GGUF variants of the default model for tests, with the ``gguf`` package.

The default model is a base model without a chat template; to test the
chat-template path for real, we copy it with ``tokenizer.chat_template`` added.
"""

from __future__ import annotations

from pathlib import Path


def copy_with_metadata(src: Path, dst: Path, extra: dict[str, str]) -> Path:
    """Copy the GGUF file ``src`` to ``dst`` adding (or replacing) string metadata."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(src)
    arch = reader.get_field("general.architecture")
    assert arch is not None
    writer = GGUFWriter(dst, arch=arch.contents(), endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        if field.name in extra:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    for key, value in extra.items():
        writer.add_key_value(key, value, GGUFValueType.STRING)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data)
    writer.close()
    return dst

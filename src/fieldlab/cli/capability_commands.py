"""`fieldlab capabilities`: which property every long command has, per field and modality (the registry in
`fieldlab.capabilities`)."""

from __future__ import annotations

from typing import Optional

import typer

from fieldlab.cli.main import app


@app.command("capabilities")
def capabilities_command(
    command: Optional[str] = typer.Argument(None, help="Only this command: fit, fit-dataset, extend, train or "
                                                       "train-sdf."),
    field: Optional[str] = typer.Option(None, help="Only this field architecture."),
    modality: Optional[str] = typer.Option(None, help="Only this modality."),
) -> None:
    """Per command, field and modality: the properties that hold (--max-seconds, --resume after SIGINT and
    SIGKILL, --precision, --device, --seed, --config, TensorBoard, progress), and each one that does not,
    with its reason."""
    from fieldlab._errors import UserError
    from fieldlab.capabilities import ANY, COMMANDS, format_matrix, matrix

    if command is not None and command not in COMMANDS:
        raise UserError(f"capabilities knows the commands {', '.join(COMMANDS)}, not {command!r}")
    if field is not None:
        from fieldlab.fields import get_config_class

        get_config_class(field)  # an unknown name is one line listing the known ones
    if modality is not None:
        from fieldlab.signals import get_modality

        get_modality(modality)
    # A command whose rows serve any field or modality (train, train-sdf: ANY) matches every filter.
    cells = [c for c in matrix() if command in (None, c.command) and (field is None or c.field in (field, ANY))
             and (modality is None or c.modality in (modality, ANY))]
    if not cells:
        raise UserError("no cell of the matrix matches these filters (see `fieldlab fields` and the modalities)")
    for line in format_matrix(cells):
        print(line)

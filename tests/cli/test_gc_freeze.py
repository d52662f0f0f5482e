"""A command starts by freezing the objects its imports made (`gc.freeze`): the garbage collector's full
collections during the command no longer walk the ~170k of them (a tenth of a small fit's CPU time)."""

import gc


def test_a_command_leaves_the_imported_objects_out_of_garbage_collection(cli):
    status, out, _ = cli(["version"])
    assert status == 0 and out.startswith("fieldlab ")
    assert gc.get_freeze_count() > 100_000

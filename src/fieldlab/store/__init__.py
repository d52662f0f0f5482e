"""Fields on disk: one field's DIR, and the FieldStore for datasets of fields (zarr, imported on use)."""

from fieldlab.store.field_dir import FieldDirWriter, StoredField, check_out_dir, load_field, write_field
from fieldlab.store.field_store import ChunkSampler, FieldStore, FieldStoreDataset

__all__ = ["ChunkSampler", "FieldDirWriter", "FieldStore", "FieldStoreDataset", "StoredField", "check_out_dir",
           "load_field", "write_field"]

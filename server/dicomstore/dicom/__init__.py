"""DICOM know-how over pydicom, with no I/O beyond reading a file it is given.

Header parsing and index attributes (`header`), DICOM JSON (`dicomjson`), study and series
attribute sets (`levels`), JSON + bulk data to Part 10 (`json_instances`, `json_batch`),
multipart/related (`multipart`), Accept negotiation (`accept`), stored values and frames
(`values`, `frames`), QIDO-RS matching and attribute sets (`qido`), the STOW-RS response
(`stow`), failure reason codes (`reasons`) and UID syntax (`uids`). pydicom's configuration is
process-global: nothing here changes it.
"""

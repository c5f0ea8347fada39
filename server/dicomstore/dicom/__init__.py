"""DICOM know-how over pydicom, with no I/O beyond reading a file it is given.

Header parsing and index attributes (`header`), DICOM JSON (`dicomjson`), multipart/related
(`multipart`), the STOW-RS response (`stow`), failure reason codes (`reasons`) and UID syntax
(`uids`). pydicom's configuration is process-global: nothing here changes it.
"""

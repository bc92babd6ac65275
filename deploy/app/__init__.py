"""MONAI Deploy app: DICOM radiograph in, bone meshes out as STL and DICOM Encapsulated STL."""

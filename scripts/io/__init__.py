"""Input and output: radiograph reading, files and output folders, DICOM export, report pictures, demo."""

"""The texture family: PyRadiomics GLCM, GLRLM, GLSZM and GLDM features, one matrix per module.

==============  ==============================================================
``family``      ``compute`` and ``feature_specs`` of the family (the settings,
                the features left out, the channel scaling)
``matrices``    what the matrices share: pixel pairs along the angles, grey
                levels, runs/zones/dependences, size-matrix statistics
``glcm``        grey level co-occurrence matrix (Haralick et al. 1973)
``glrlm``       grey level run length matrix (Galloway 1975)
``glszm``       grey level size zone matrix (Thibault et al. 2009)
``gldm``        grey level dependence matrix (Sun & Wee 1983)
==============  ==============================================================
"""

"""A small corpus shared by the examples: a few topics, each with a relevant passage and near misses."""

CORPUS = [
    "Hamlet is a tragedy written by William Shakespeare sometime between 1599 and 1601.",
    "Shakespeare's Globe is a reconstruction of the Elizabethan playhouse in London.",
    "Macbeth, another Shakespeare tragedy, was first performed around 1606.",
    "Berlin is the capital and largest city of Germany, with about 3.7 million inhabitants.",
    "Munich is the capital of Bavaria and is known for the Oktoberfest.",
    "The Berlin Wall divided the city from 1961 until it fell in 1989.",
    "Photosynthesis is the process by which green plants turn light, water and CO2 into sugar and oxygen.",
    "Chlorophyll is the green pigment that absorbs light in plant cells.",
    "Cellular respiration releases energy from glucose in the mitochondria.",
    "Mount Everest, at 8,849 metres, is Earth's highest mountain above sea level.",
    "K2 is the second-highest mountain on Earth, in the Karakoram range.",
    "The Eiffel Tower was completed in 1889 and is 330 metres tall.",
    "Python was created by Guido van Rossum and first released in 1991.",
    "Rust is a systems programming language focused on memory safety without garbage collection.",
    "A cross-encoder reads the query and a document together and outputs one relevance score.",
    "Bi-encoders embed queries and documents separately, which makes first-stage retrieval fast.",
]

QUERIES = [
    "Who wrote Hamlet?",
    "How many people live in Berlin?",
    "How do plants make sugar from sunlight?",
]

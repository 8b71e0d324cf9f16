"""Texts shared by the LangChain adapter tests."""

PASSAGES = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
    "Paris is the capital and largest city of France.",
    "The cat sat on the mat and purred.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "Water boils at one hundred degrees Celsius at sea level.",
]
QUERY = "What is the capital of China?"

"""``python -m dan`` lists the stages' command-line entry points."""

print("dan stages: python -m dan.data | python -m dan.features | python -m dan.train | python -m dan.evaluate | "
      "python -m dan.study")

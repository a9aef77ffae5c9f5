"""What a kernelspec of a target runs in a Jupyter client that does not use kernel provisioners
(jupyter_client before 7): it says what is needed, and exits."""
import sys


def main() -> int:
    print("This kernel runs on a jupyter_compute target: it needs a Jupyter client with kernel "
          "provisioners (jupyter_client 7 or newer) and jupyter_compute installed beside it.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""TUF repositories (image and director), their keys and signers."""

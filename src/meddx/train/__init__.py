"""meddx.train"""
